// istio-validation serves Istio's own configuration validation as a Kubernetes validating
// admission webhook, for the local stack (`coalmine devstack up`), where no istiod runs.
//
// The handler behind /validate is istiod's: istio.io/istio/pkg/webhooks/validation/server,
// registered exactly as istiod registers it (pilot/pkg/bootstrap/validation.go), so every
// VirtualService and DestinationRule written to the stack passes the checks istiod applies,
// and a refusal carries istiod's message ("configuration is invalid: ...").
//
// One addition: before istiod's handler runs, the object's spec is decoded with Istio's strict
// decoder (config.ApplyJSONStrict), because istiod's handler decodes leniently and drops fields
// it does not know. Behind a real API server this changes nothing for VirtualServices and
// DestinationRules (their CRD schemas already prune or refuse unknown fields before admission);
// it matters for AdmissionReviews sent to the webhook directly and for CRD schemas that keep
// unknown fields.
//
// Usage: istio-validation --listen 127.0.0.1:PORT --tls-cert-file F --tls-private-key-file F
//
//	GET  /healthz   "ok" once serving
//	POST /validate  admission.k8s.io/v1 AdmissionReview in, AdmissionReview out
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collection"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/resource"
	"istio.io/istio/pkg/webhooks/validation/server"
)

const (
	domainSuffix = "cluster.local" // istiod's default --domain
	maxBodyBytes = 6 * 1024 * 1024 // istiod's kube.MaxRequestBodyBytes
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9443", "host:port to serve HTTPS on")
	certFile := flag.String("tls-cert-file", "", "PEM serving certificate (with SAN for the listen host)")
	keyFile := flag.String("tls-private-key-file", "", "PEM private key of the serving certificate")
	showVersion := flag.Bool("version", false, "print the Istio module versions built in, then exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(versions())
		return
	}
	if *certFile == "" || *keyFile == "" {
		log.Fatal("--tls-cert-file and --tls-private-key-file are required")
	}

	schemas := collections.PilotGatewayAPI() // what istiod's validation server uses
	istiod := http.NewServeMux()
	if _, err := server.New(server.Options{Schemas: schemas, DomainSuffix: domainSuffix, Mux: istiod}); err != nil {
		log.Fatalf("istiod's validation server: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.Handle("/validate", strictThen(schemas, istiod))

	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("loading the serving certificate: %v", err)
	}
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("istio-validation (%s) serving https://%s/validate", versions(), *listen)
	if err := srv.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// strictThen refuses a CREATE or UPDATE whose spec Istio's strict decoder rejects, and hands
// everything else to istiod's handler unchanged.
func strictThen(schemas collection.Schemas, istiod http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
		_ = r.Body.Close()
		if err != nil || len(body) > maxBodyBytes {
			http.Error(w, "cannot read the request body", http.StatusBadRequest)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err == nil && review.Request != nil {
			if message := strictDecodeError(schemas, review.Request); message != "" {
				log.Printf("refused %s %s/%s: %s", review.Request.Kind.Kind, review.Request.Namespace, review.Request.Name, message)
				writeDenial(w, &review, message)
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		istiod.ServeHTTP(w, r)
	})
}

// strictDecodeError is "" when the object decodes strictly (or is not ours to judge here).
func strictDecodeError(schemas collection.Schemas, req *admissionv1.AdmissionRequest) string {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return ""
	}
	var obj crd.IstioKind
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return "" // istiod's handler reports undecodable objects itself
	}
	gvk := obj.GroupVersionKind()
	s, ok := schemas.FindByGroupKind(resource.FromKubernetesGVK(&gvk))
	if !ok {
		return "" // and unknown types
	}
	strict := func(s resource.Schema, js string) (config.Spec, error) {
		spec, err := s.NewInstance()
		if err != nil {
			return nil, err
		}
		return spec, config.ApplyJSONStrict(spec, js)
	}
	if _, err := crd.ConvertObjectInternal(s, &obj, domainSuffix, strict); err != nil {
		// The same wording istiod uses when it cannot convert an object.
		return fmt.Sprintf("error decoding configuration: %v", err)
	}
	return ""
}

func writeDenial(w http.ResponseWriter, review *admissionv1.AdmissionReview, message string) {
	out := admissionv1.AdmissionReview{
		TypeMeta: review.TypeMeta,
		Response: &admissionv1.AdmissionResponse{
			UID:     review.Request.UID,
			Allowed: false,
			Result:  &metav1.Status{Message: message},
		},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// versions names the Istio modules this binary was built from (from the Go build info).
func versions() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "istio.io/istio (unknown) istio.io/api (unknown)"
	}
	found := map[string]string{"istio.io/istio": "(unknown)", "istio.io/api": "(unknown)"}
	for _, dep := range info.Deps {
		if _, want := found[dep.Path]; want {
			found[dep.Path] = dep.Version
			if dep.Replace != nil {
				found[dep.Path] = dep.Replace.Version
			}
		}
	}
	return fmt.Sprintf("istio.io/istio %s istio.io/api %s %s", found["istio.io/istio"], found["istio.io/api"], info.GoVersion)
}
