// Command kstatus prints the kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) of Kubernetes objects:
// the status Flux's kustomize-controller (wait: true, healthChecks) and `kubectl wait`-style tools
// compute from an object's generation and conditions. The tests use it to check that what the
// operator writes reads as InProgress while converging, Current when Ready and Failed when Stalled.
//
// Input on stdin: JSON objects as `kubectl get -o json` prints them (one object, a List, or several
// objects one after another). Output: one JSON line per object,
// {"kind":..,"namespace":..,"name":..,"status":..,"message":..}.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		// Unstructured's own decoder keeps integers int64 (metadata.generation), as kstatus expects.
		var objs []unstructured.Unstructured
		var probe struct {
			Items json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(raw, &probe); err != nil {
			return err
		}
		if probe.Items != nil {
			list := &unstructured.UnstructuredList{}
			if err := list.UnmarshalJSON(raw); err != nil {
				return err
			}
			objs = list.Items
		} else {
			u := unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw); err != nil {
				return err
			}
			objs = append(objs, u)
		}
		for i := range objs {
			u := &objs[i]
			res, err := status.Compute(u)
			if err != nil {
				return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
			}
			if err := enc.Encode(result{
				Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(),
				Status: res.Status.String(), Message: res.Message,
			}); err != nil {
				return err
			}
		}
	}
}
