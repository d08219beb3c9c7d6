package appprobe

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestParse(t *testing.T) {
	// Istio's own example (pilot-agent's status server), and every action.
	good := `{"/app-health/httpbin/livez":{"httpGet":{"path":"/hello","port":8080}},` +
		`"/app-health/httpbin/readyz":{"tcpSocket":{"port":8080},"timeoutSeconds":5},` +
		`"/app-health/httpbin/startupz":{"grpc":{"port":9090,"service":null}}}` // corev1.GRPCAction has no omitempty, Istio writes null too
	ps, err := Parse(good)
	if err != nil || len(ps) != 3 {
		t.Fatalf("Parse(%s) = %v, %v", good, ps, err)
	}
	live := ps["/app-health/httpbin/livez"]
	if live.HTTPGet.Path != "/hello" || live.Port() != 8080 || live.Timeout() != DefaultTimeoutSeconds {
		t.Errorf("livez %+v", live)
	}
	if r := ps["/app-health/httpbin/readyz"]; r.Port() != 8080 || r.Timeout() != 5 {
		t.Errorf("readyz %+v", r)
	}
	if s := ps["/app-health/httpbin/startupz"]; s.Port() != 9090 {
		t.Errorf("startupz %+v", s)
	}
	if again, err := ps.Encode(); err != nil || again != good {
		t.Errorf("Encode = %s, %v; want what was parsed, %s", again, err, good)
	}
	if ps.Paths()[0] != "/app-health/httpbin/livez" {
		t.Errorf("Paths %v not sorted", ps.Paths())
	}

	if _, err := Parse(`[1]`); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Errorf("Parse of a non-object: %v", err)
	}

	// Each bad entry is named and left out; the good one stays.
	bad := map[string]string{
		`/app-lifecycle/c/prestopz`:     `{"httpGet":{"port":80}}`,
		`/app-health/c/healthz`:         `{"httpGet":{"port":80}}`,
		`/app-health/C_1/livez`:         `{"httpGet":{"port":80}}`,
		`/app-health/a/readyz`:          `{"httpGet":{"port":"http"}}`,
		`/app-health/b/readyz`:          `{"tcpSocket":{"port":0}}`,
		`/app-health/c/readyz`:          `{"grpc":{"port":70000}}`,
		`/app-health/d/readyz`:          `{}`,
		`/app-health/e/readyz`:          `{"httpGet":{"port":80},"tcpSocket":{"port":80}}`,
		`/app-health/f/readyz`:          `{"httpGet":{"port":80,"scheme":"FTP"}}`,
		`/app-health/g/readyz`:          `{"httpGet":{"port":80,"httpHeaders":[{"name":"bad name","value":"x"}]}}`,
		`/app-health/h/readyz`:          `{"httpGet":{"port":80,"httpHeaders":[{"name":"x","value":"a\r\nb"}]}}`,
		`/app-health/i/readyz`:          `{"httpGet":{"port":80},"timeoutSeconds":-1}`,
		`/app-health/j/readyz`:          `null`,
		`/app-health/ok/readyz`:         `{"httpGet":{"port":80,"path":"/x%y"}}`,
		`/app-health/k/readyz`:          `{"httpGet":{"port":80,"path":"/a\nb"}}`,
		`/app-health/l/readyz`:          `{"grpc":{"port":80,"service":"a\u0000"}}`,
		`/app-health/too/many/readyz`:   `{"httpGet":{"port":80}}`,
		`/app-health/m/readyz/`:         `{"httpGet":{"port":80}}`,
		`/app-health//readyz`:           `{"httpGet":{"port":80}}`,
		`/app-health/n/readyz?x=1`:      `{"httpGet":{"port":80}}`,
		`/app-health/o/startupz#frag`:   `{"httpGet":{"port":80}}`,
		`app-health/p/readyz`:           `{"httpGet":{"port":80}}`,
		`/app-health/q/livez/../readyz`: `{"httpGet":{"port":80}}`,
	}
	var b strings.Builder
	b.WriteString("{")
	first := true
	for path, p := range bad {
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(`"` + path + `":` + p)
	}
	b.WriteString("}")
	ps, err = Parse(b.String())
	if len(ps) != 1 || ps["/app-health/ok/readyz"] == nil {
		t.Errorf("kept %v, want only /app-health/ok/readyz", ps.Paths())
	}
	for path := range bad {
		if path != "/app-health/ok/readyz" && !strings.Contains(err.Error(), `"`+path+`"`) {
			t.Errorf("the error does not name %s:\n%v", path, err)
		}
	}
	if strings.Contains(err.Error(), "/app-health/ok/readyz") {
		t.Errorf("the error names the good entry:\n%v", err)
	}
}

func TestFromPod(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app", Env: []corev1.EnvVar{{Name: EnvName, Value: "not this one"}}},
		{Name: "istio-proxy", Env: []corev1.EnvVar{{Name: "POD_IP"}, {Name: EnvName, Value: "{}"}}},
	}}}
	v, field, ok := FromPod(pod)
	if !ok || v != "{}" || field != "spec.containers[1].env[1] (ISTIO_KUBE_APP_PROBERS)" {
		t.Errorf("FromPod = %q, %q, %v", v, field, ok)
	}
	if _, _, ok := FromPod(&corev1.Pod{}); ok {
		t.Error("FromPod found a value in an empty pod")
	}
	if s, err := (Probers{}).Encode(); s != "" || err != nil {
		t.Errorf("empty probers encode as %q, %v; Istio writes nothing", s, err)
	}
	p := &Prober{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(7)}}
	if p.Port() != 7 || (&Prober{}).Port() != 0 {
		t.Errorf("Port")
	}
}
