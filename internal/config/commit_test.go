package config

import (
	"strings"
	"testing"
)

// The store writers' settings (#12): decoded under resumption.store, and
// checked once, by resumption/stateful, with the field and value named.
func TestStoreCommitFields(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(`
resumption:
  mode: redis
  redis: {addrs: ["127.0.0.1:6379"]}
  store: {commit_async: true, commit_queue: 100, commit_workers: 2}
` + goodRoute))
	if err != nil {
		t.Fatal(err)
	}
	st := c.Resumption.Store
	if !st.CommitAsync || st.CommitQueue != 100 || st.CommitWorkers != 2 {
		t.Fatalf("store commit fields not decoded: %+v", st)
	}

	bad := []struct{ name, store, want string }{
		{"negative queue", "{commit_queue: -1}", "resumption.store.commit_queue: must not be negative, got -1"},
		{"negative workers", "{commit_workers: -3}", "resumption.store.commit_workers: must not be negative, got -3"},
		{"async not a bool", "{commit_async: maybe}", "commit_async"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(strings.NewReader("resumption: {store: " + tt.store + "}\n" + goodRoute))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}
