package configs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

// manifests are the objects of one kustomization, decoded strictly into
// the Kubernetes API types (an unknown or misspelt field fails).
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	cronJobs    []*batchv1.CronJob
	pdbs        []*policyv1.PodDisruptionBudget
}

// decodeStrict decodes one YAML document into the type of its kind.
func decodeStrict(t *testing.T, m *manifests, doc []byte) {
	t.Helper()
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		t.Fatal(err)
	}
	var obj any
	switch meta.APIVersion + " " + meta.Kind {
	case "apps/v1 Deployment":
		d := &appsv1.Deployment{}
		m.deployments, obj = append(m.deployments, d), d
	case "v1 Service":
		s := &corev1.Service{}
		m.services, obj = append(m.services, s), s
	case "v1 ConfigMap":
		c := &corev1.ConfigMap{}
		m.configMaps, obj = append(m.configMaps, c), c
	case "batch/v1 CronJob":
		c := &batchv1.CronJob{}
		m.cronJobs, obj = append(m.cronJobs, c), c
	case "policy/v1 PodDisruptionBudget":
		p := &policyv1.PodDisruptionBudget{}
		m.pdbs, obj = append(m.pdbs, p), p
	case "v1 ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "rbac.authorization.k8s.io/v1 Role":
		obj = &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		obj = &rbacv1.RoleBinding{}
	default:
		t.Fatalf("unexpected kind %s %s: add it to the test", meta.APIVersion, meta.Kind)
	}
	// As the API server decodes: field names are case-sensitive, unknown
	// and duplicate fields are errors (encoding/json, which
	// sigs.k8s.io/yaml.UnmarshalStrict uses, would accept
	// readOnlyRootFileSystem for readOnlyRootFilesystem).
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		t.Fatalf("%s: %v", meta.Kind, err)
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err := errors.Join(append(strict, err)...); err != nil {
		t.Fatalf("%s: %v", meta.Kind, err)
	}
}

func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 && bytes.Contains(d, []byte("kind:")) {
			docs = append(docs, d)
		}
	}
	return docs
}

// build runs kustomize (the library kubectl -k uses) on dir.
func build(t *testing.T, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	m := &manifests{}
	for _, doc := range splitDocs(out) {
		decodeStrict(t, m, doc)
	}
	return m
}

// TestKubernetesManifestsDecodeStrictly: every manifest file, before
// kustomize touches it, decodes into the API types with unknown fields
// refused.
func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	n := 0
	err := filepath.WalkDir("kubernetes", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		switch filepath.Base(p) {
		case "kustomization.yaml", "edgeproxy.yaml":
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, doc := range splitDocs(data) {
			decodeStrict(t, &manifests{}, doc)
			n++
		}
		return nil
	})
	if err != nil || n < 8 {
		t.Fatalf("walked %d manifests: %v", n, err)
	}
}

func containerNamed(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

// checkPodSecurity: every container runs as non-root, without privilege
// escalation, with a read-only root filesystem, no capabilities, and
// resource requests and limits.
func checkPodSecurity(t *testing.T, what string, spec *corev1.PodSpec) {
	t.Helper()
	podNonRoot := spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		name := what + "/" + c.Name
		if sc == nil {
			t.Errorf("%s: no securityContext", name)
			continue
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			t.Errorf("%s: runAsNonRoot not set", name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 || spec.SecurityContext != nil && spec.SecurityContext.RunAsUser != nil && *spec.SecurityContext.RunAsUser == 0 {
			t.Errorf("%s: runs as uid 0", name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation is not false", name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem is not true", name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: capabilities do not drop ALL", name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", name)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("%s: no %s request", name, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("%s: no %s limit", name, r)
			}
		}
	}
}

// portNumber resolves a probe or Service port (a number or a container
// port's name) against c.
func portNumber(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

func portOfAddr(t *testing.T, addr string) int32 {
	t.Helper()
	n, err := strconv.Atoi(portOf(t, addr))
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// edgeproxyPod checks the edgeproxy container of a Deployment against the
// configuration its ConfigMap holds, and returns that configuration.
func edgeproxyPod(t *testing.T, m *manifests, d *appsv1.Deployment) *config.Config {
	t.Helper()
	spec := &d.Spec.Template.Spec
	checkPodSecurity(t, d.Name, spec)
	c := containerNamed(spec, "edgeproxy")
	if c == nil {
		t.Fatalf("deployment %s has no edgeproxy container", d.Name)
	}
	cfgPath := flagValue(c.Args, "config")
	if cfgPath == "" {
		t.Fatalf("edgeproxy args %q: no --config", c.Args)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	// The mount that holds the config file must be the ConfigMap.
	var cm *corev1.ConfigMap
	secretDirs := []string{}
	for _, vm := range c.VolumeMounts {
		v := volumes[vm.Name]
		if !vm.ReadOnly {
			t.Errorf("edgeproxy mounts %s read-write", vm.Name)
		}
		switch {
		case v.ConfigMap != nil && path.Dir(cfgPath) == vm.MountPath:
			for _, x := range m.configMaps {
				if x.Name == v.ConfigMap.Name {
					cm = x
				}
			}
		case v.Secret != nil:
			secretDirs = append(secretDirs, vm.MountPath)
			if mode := v.Secret.DefaultMode; mode == nil || *mode&0o007 != 0 {
				t.Errorf("secret volume %s: defaultMode %v gives others access", v.Name, mode)
			}
		}
	}
	if cm == nil {
		t.Fatalf("no ConfigMap mounted at %s", path.Dir(cfgPath))
	}
	raw, ok := cm.Data[path.Base(cfgPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm.Name, path.Base(cfgPath))
	}
	cfg := loadConfig(t, []byte(raw))
	checked := *cfg
	// Every file the config names (keys, certificates) is a mounted Secret.
	for _, p := range checkWithStandIns(t, &checked) {
		if !underAny(p, secretDirs) {
			t.Errorf("the config names %s, but no Secret is mounted there (secrets at %q)", p, secretDirs)
		}
	}
	if sc := spec.SecurityContext; len(secretDirs) > 0 && (sc == nil || sc.FSGroup == nil) {
		t.Error("Secret files are owned by root: without fsGroup the non-root user cannot read them")
	}

	// Ports and probes match the config.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["https"] != portOfAddr(t, cfg.Listen) {
		t.Errorf("container port https %d, config listens on %s", ports["https"], cfg.Listen)
	}
	if cfg.Admin == nil || *cfg.Admin == "" {
		t.Fatal("the config turns the admin listener off: no probes")
	}
	if ports["admin"] != portOfAddr(t, *cfg.Admin) {
		t.Fatalf("container port admin %d, config admin %s", ports["admin"], *cfg.Admin)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || portNumber(c, p.probe.HTTPGet.Port) != ports["admin"] {
			t.Errorf("%s probe %+v: want GET %s on the admin port %d", p.name, p.probe, p.path, ports["admin"])
		}
	}

	// Graceful termination: preStop, then a drain of shutdown_timeout,
	// within the grace period.
	pre := time.Duration(0)
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		pre = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	} else {
		t.Error("edgeproxy has no preStop sleep: load balancers may still send connections after it stops accepting")
	}
	drain := cfg.ShutdownTimeout
	if drain == 0 {
		drain = config.DefaultShutdownTimeout
	}
	var grace time.Duration
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= pre+drain {
		t.Errorf("terminationGracePeriodSeconds %s: want more than preStop %s + shutdown_timeout %s", grace, pre, drain)
	}

	// The Service sends its port to the TLS listener, never the admin one.
	for _, s := range m.services {
		if !selects(s.Spec.Selector, d.Spec.Template.Labels) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if portNumber(c, sp.TargetPort) != ports["https"] {
				t.Errorf("service %s port %s targets %v, not the TLS listener", s.Name, sp.Name, sp.TargetPort)
			}
		}
	}
	return cfg
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesSidecar(t *testing.T) {
	t.Parallel()
	m := build(t, "kubernetes/base")
	if len(m.deployments) != 1 {
		t.Fatalf("%d deployments", len(m.deployments))
	}
	d := m.deployments[0]
	cfg := edgeproxyPod(t, m, d)
	if containerNamed(&d.Spec.Template.Spec, "app") == nil {
		t.Error("no application container next to edgeproxy")
	}
	if cfg.Resumption.TicketKeys.Source != "file" {
		t.Fatalf("sidecar ticket keys come from %q, want the Secret's files", cfg.Resumption.TicketKeys.Source)
	}

	// Key rotation: the CronJob generates keys with edgeproxy keys gen,
	// patches the Secret the pods mount, and keeps old keys for one
	// session lifetime.
	if len(m.cronJobs) != 1 {
		t.Fatalf("%d cronjobs, want the key rotation", len(m.cronJobs))
	}
	cj := m.cronJobs[0]
	js := &cj.Spec.JobTemplate.Spec.Template.Spec
	checkPodSecurity(t, cj.Name, js)
	var secretName string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "ticket-keys" && v.Secret != nil {
			secretName = v.Secret.SecretName
		}
	}
	gen := false
	for _, c := range js.InitContainers {
		gen = gen || slices.Equal(c.Args[:2], []string{"keys", "gen"})
	}
	if !gen {
		t.Error("rotation does not make keys with edgeproxy keys gen")
	}
	rot := containerNamed(js, "rotate")
	if rot == nil {
		t.Fatal("no rotate container")
	}
	env := map[string]string{}
	for _, e := range rot.Env {
		env[e.Name] = e.Value
	}
	if env["SECRET"] != secretName || secretName == "" {
		t.Errorf("rotation patches secret %q, pods mount %q", env["SECRET"], secretName)
	}
	every, _ := strconv.Atoi(env["ROTATE_EVERY_HOURS"])
	keep, _ := strconv.Atoi(env["KEEP_OLD"])
	if time.Duration(every*keep)*time.Hour < cfg.Resumption.SessionLifetime || !strings.Contains(cj.Spec.Schedule, fmt.Sprintf("*/%d", every)) {
		t.Errorf("rotation every %dh keeping %d old keys (schedule %q) does not cover session_lifetime %s", every, keep, cj.Spec.Schedule, cfg.Resumption.SessionLifetime)
	}
	script := strings.Join(rot.Args, " ")
	if !strings.Contains(script, "cat next.key new.key sealing.key older.key") {
		t.Errorf("rotation does not write the pre-distributed key first and keep the old ones: %s", script)
	}
}

func TestKubernetesFleet(t *testing.T) {
	t.Parallel()
	m := build(t, "kubernetes/overlays/fleet")
	var app *appsv1.Deployment
	for _, d := range m.deployments {
		if containerNamed(&d.Spec.Template.Spec, "edgeproxy") != nil {
			app = d
		} else {
			checkPodSecurity(t, d.Name, &d.Spec.Template.Spec)
		}
	}
	if app == nil {
		t.Fatal("no deployment with edgeproxy")
	}
	cfg := edgeproxyPod(t, m, app)
	if app.Spec.Replicas == nil || *app.Spec.Replicas < 2 {
		t.Errorf("fleet replicas %v, want several", app.Spec.Replicas)
	}
	if cfg.Resumption.Mode != "redis" {
		t.Errorf("fleet resumption mode %q, want redis", cfg.Resumption.Mode)
	}
	for _, a := range cfg.Resumption.Redis.Addrs {
		host, _, _ := strings.Cut(a, ":")
		if !slices.ContainsFunc(m.services, func(s *corev1.Service) bool { return s.Name == host }) {
			t.Errorf("redis address %q is no Service of the overlay", a)
		}
	}
	if len(m.pdbs) != 1 || m.pdbs[0].Spec.Selector == nil || !selects(m.pdbs[0].Spec.Selector.MatchLabels, app.Spec.Template.Labels) {
		t.Fatalf("want one PodDisruptionBudget selecting the fleet's pods, got %d", len(m.pdbs))
	}
	if p := m.pdbs[0].Spec; p.MaxUnavailable == nil && p.MinAvailable == nil {
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}
}
