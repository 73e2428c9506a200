// A Go HTTPS service for the Go crypto/tls work, standard library only.
//
//	go_tls -port P [-cert PEM] [-downstream https://127.0.0.1:Q]
//
// With -cert it serves HTTPS, else HTTP. With -downstream each request makes one HTTPS call
// there (certificate not checked: the tests use a self-signed one) and answers with its body.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
)

func main() {
	port := flag.Int("port", 0, "port to listen on (127.0.0.1)")
	cert := flag.String("cert", "", "PEM file holding the key and certificate; serves HTTPS")
	downstream := flag.String("downstream", "", "HTTPS base URL to call per request")
	flag.Parse()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	handler := func(w http.ResponseWriter, r *http.Request) {
		if *downstream == "" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, "{\"ok\":true,\"path\":%q}", r.URL.Path)
			return
		}
		answer, err := client.Get(*downstream + "/item" + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer answer.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(answer.StatusCode)
		io.Copy(w, answer.Body)
	}
	server := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), Handler: http.HandlerFunc(handler)}
	fmt.Println("ready")
	if *cert != "" {
		log.Fatal(server.ListenAndServeTLS(*cert, *cert))
	}
	log.Fatal(server.ListenAndServe())
}
