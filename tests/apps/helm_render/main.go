// helm_render renders a Helm chart the way `helm template` does, for CI on machines where no
// reachable registry ships helm itself. It uses the engine Helm is built on: Go's
// text/template with the sprig function library (Debian's golang-github-masterminds-sprig-dev),
// plus the few functions Helm adds (include, toYaml, required, fail). A chart that uses
// anything beyond that fails to render here, loudly, rather than rendering differently.
//
// Usage: helm_render CHART_DIR RELEASE NAMESPACE [VALUES_OVERRIDE.yaml]
// Writes every rendered manifest to stdout, each after a `# Source:` line and `---`.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

func main() {
	if len(os.Args) < 4 {
		fail("usage: helm_render CHART_DIR RELEASE NAMESPACE [VALUES_OVERRIDE.yaml]")
	}
	chartDir, release, namespace := os.Args[1], os.Args[2], os.Args[3]
	chart := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	values := readYAML(filepath.Join(chartDir, "values.yaml"))
	if len(os.Args) > 4 {
		merge(values, readYAML(os.Args[4]))
	}
	top := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": true},
		"Chart":   map[string]interface{}{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
	}
	root := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYAML
	funcs["required"] = func(why string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, errors.New(why)
		}
		return v, nil
	}
	funcs["fail"] = func(why string) (string, error) { return "", errors.New(why) }
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var out bytes.Buffer
		err := root.ExecuteTemplate(&out, name, data)
		return out.String(), err
	}
	root.Funcs(funcs)
	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	check(err)
	sort.Strings(files)
	for _, f := range files {
		text, err := os.ReadFile(f)
		check(err)
		_, err = root.New(filepath.Base(f)).Parse(string(text))
		check(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		// As in Helm: partials (_*.tpl) only define templates; NOTES.txt is not a manifest.
		if strings.HasPrefix(name, "_") || name == "NOTES.txt" {
			continue
		}
		var out bytes.Buffer
		if err := root.ExecuteTemplate(&out, name, top); err != nil {
			fail(err.Error())
		}
		if strings.TrimSpace(out.String()) == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s/templates/%s\n%s\n", chart["name"], name, strings.TrimRight(out.String(), "\n"))
	}
}

func readYAML(path string) map[string]interface{} {
	text, err := os.ReadFile(path)
	check(err)
	out := map[string]interface{}{}
	check(yaml.Unmarshal(text, &out))
	return out
}

// merge overlays src on dst as Helm merges -f values: maps recursively, anything else replaced.
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sub, ok := v.(map[string]interface{}); ok {
			if into, ok := dst[k].(map[string]interface{}); ok {
				merge(into, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// toYAML as Helm's: two-space indents, no trailing newline.
func toYAML(v interface{}) string {
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(out.String(), "\n")
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(why string) {
	fmt.Fprintln(os.Stderr, "helm_render:", why)
	os.Exit(1)
}
