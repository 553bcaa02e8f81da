// pause: the infrastructure container of every pod on the test node (the kubelet's "sandbox image").
// It does what upstream's build/pause does: sleeps as PID 1 of the pod, reaps orphaned children, and
// exits 0 on SIGINT or SIGTERM. Built locally (scripts/build-node-images.sh) because the test machines
// reach no container registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("pause (webrelease test node)\n")
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
