-- Argo CD health for coalmine.dev/Rollout. Install in argocd-cm as
--   resource.customizations.health.coalmine.dev_Rollout: |  <this file>
-- Progressing/Pending -> Progressing, Succeeded -> Healthy, RolledBack/Invalid -> Degraded; a spec the
-- operator has not seen yet (observedGeneration != generation) is Progressing whatever the phase says.
-- Tested by tests/unit/test_argocd_health.py on statuses written by the real operator.
local hs = {}
local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the Rollout"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local phase = status.phase
local message = status.message or ""
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "RolledBack" or phase == "Invalid" then
  hs.status = "Degraded"
elseif phase == "Progressing" or phase == "Pending" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
  message = "Unknown phase " .. tostring(phase)
end
if status.canaryWeight ~= nil and phase == "Progressing" then
  message = "canary at " .. tostring(status.canaryWeight) .. "%: " .. message
end
hs.message = message
return hs
