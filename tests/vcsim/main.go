// vcsim: govmomi's vSphere API simulator (a vCenter model: one datacenter DC0, cluster
// DC0_C0, hosts, datastore LocalDS_0, network VM Network) as a small server for the
// vSphere plugin's tests and benchmarks. Debian's golang-github-vmware-govmomi-dev ships
// the simulator package but not vcsim's own main; scripts/setup.d/45-vsphere.sh builds
// this file into $IMAGEFACTORY_SERVICES/vcsim/vcsim.
//
//	vcsim -listen 127.0.0.1:PORT -username USER -password PASS [-exit-on-eof]
//	      [-cert CERT.pem -key KEY.pem]
//
// With -cert and -key it serves HTTPS with that certificate (as a vCenter with a VMCA-
// signed certificate does), else plain HTTP. It listens on loopback only, accepts exactly the given credentials (a wrong password is
// refused as a real vCenter would), prints "VCSIM_READY http://127.0.0.1:PORT/sdk" once
// it answers, and exits on SIGTERM/SIGINT (or, with -exit-on-eof, when stdin closes, so
// a test's simulator never outlives the test), removing its datastore directories
// (created under $TMPDIR).
//
// One simulator bug is worked around here, not in the plugin: govmomi 0.24's CreateVM_Task
// looks for "<name>-flat.vmdk" before "<name>.vmdk" when a disk names an existing file, so
// an uploaded monolithic VMDK is "not found". After each datastore upload of a .vmdk this
// server creates an empty "-flat.vmdk" beside it, which is what a real datastore's
// descriptor-plus-extent layout would show.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address:port to listen on")
	username := flag.String("username", "", "the only user name accepted")
	password := flag.String("password", "", "the only password accepted")
	watchStdin := flag.Bool("exit-on-eof", false, "exit when stdin reaches end of file (the parent died)")
	certFile := flag.String("cert", "", "serve HTTPS with this PEM certificate (with -key)")
	keyFile := flag.String("key", "", "the PEM private key of -cert")
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("vcsim: bad -listen %q: %v", *listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		log.Fatalf("vcsim: -listen must be a loopback address, not %q", host)
	}
	if *username == "" || *password == "" {
		log.Fatal("vcsim: -username and -password are required")
	}

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: cannot create the model: %v", err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if (*certFile == "") != (*keyFile == "") {
		log.Fatal("vcsim: -cert and -key go together")
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("vcsim: cannot load -cert/-key: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	server := model.Service.NewServer()
	defer server.Close()
	// No client knows the port before VCSIM_READY is printed, so swapping the handler
	// here races with no request.
	server.Config.Handler = withFlatExtents(server.Config.Handler)

	u := *server.URL
	u.User = nil
	fmt.Printf("VCSIM_READY %s\n", u.String())
	os.Stdout.Sync()

	done := make(chan struct{}, 2)
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			done <- struct{}{}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		done <- struct{}{}
	}()
	<-done
}

// withFlatExtents wraps the simulator's handler: after a successful datastore upload of
// NAME.vmdk it creates an empty NAME-flat.vmdk beside it (see the file comment).
func withFlatExtents(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The simulator's handler rewrites r.URL.Path: read it first.
		urlPath := r.URL.Path
		next.ServeHTTP(w, r)
		if r.Method != http.MethodPut || !strings.HasPrefix(urlPath, "/folder/") {
			return
		}
		rel := strings.TrimPrefix(urlPath, "/folder/")
		if !strings.HasSuffix(rel, ".vmdk") || strings.HasSuffix(rel, "-flat.vmdk") {
			return
		}
		dsName := r.URL.Query().Get("dsName")
		for _, e := range simulator.Map.All("Datastore") {
			ds, ok := e.(*simulator.Datastore)
			if !ok || (dsName != "" && ds.Name != dsName) {
				continue
			}
			file := path.Join(ds.Info.GetDatastoreInfo().Url, rel)
			if _, err := os.Stat(file); err != nil {
				continue
			}
			flat := strings.TrimSuffix(file, ".vmdk") + "-flat.vmdk"
			if _, err := os.Stat(flat); os.IsNotExist(err) {
				if f, err := os.Create(flat); err == nil {
					f.Close()
				}
			}
		}
	})
}
