package config
import ("testing";"time";"os";"fmt")
func FuzzSlow(f *testing.F) {
	if data, err := os.ReadFile("testdata/good.yaml"); err == nil { f.Add(data) }
	f.Add([]byte(workload("a", "10.0.0.1")))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: &m {name: a}\nspec: {hosts: *m}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(500 * time.Millisecond):
				os.WriteFile(fmt.Sprintf("/tmp/slow-%d.yaml", time.Now().UnixNano()), data, 0o644)
			}
		}()
		Parse("fuzz.yaml", data)
		close(done)
	})
}
