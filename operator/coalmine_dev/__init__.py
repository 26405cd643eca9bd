"""The development harness, never in the image: the local stack (devstack), the mesh simulator (meshsim),
the demo, and the process helpers they, bench/ and tests/ share.

It uses the product (coalmine.core for models and durations, coalmine.status for the demo's live view);
the product never imports it. Installed in development from tools/devkit (distribution coalmine-dev),
which also plugs `coalmine devstack|meshsim|demo` into the `coalmine` command.
"""
