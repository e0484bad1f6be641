package main

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// clusterFlags are kubectl's ways of naming a cluster, for the commands that read one
// (doctor, preview --cluster).
type clusterFlags struct {
	kubeconfig string
	context    string
}

func (c *clusterFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else the in-cluster config)")
	fs.StringVar(&c.context, "context", "", "kubeconfig context to use (default: the current context)")
}

// restConfig loads the connection as kubectl does: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config, else the in-cluster config; --context picks a context. A missing or
// broken kubeconfig is a usage error; the cluster itself is not contacted here.
func (c *clusterFlags) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: c.context}).ClientConfig()
	if err != nil {
		return nil, usageError{fmt.Errorf("loading the kubeconfig: %w", err)}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "ha-injector/" + version
	return cfg, nil
}

// unreachableError marks a cluster that could not be reached or read (exit code 3).
type unreachableError struct{ error }

// reachError turns an error of a first request to the cluster into an
// unreachableError unless the API server answered it (then it is returned as is).
func reachError(err error) error {
	var status apierrors.APIStatus
	if err == nil || errors.As(err, &status) {
		return err
	}
	return unreachableError{fmt.Errorf("the cluster could not be reached: %w", err)}
}

// failedError marks a command that ran but found a problem (exit code 1), already
// reported on stdout.
type failedError struct{ error }
