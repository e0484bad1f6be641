package refdocs

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric is one metric as a registry describes it.
type Metric struct {
	Name   string
	Type   string // counter, gauge, histogram, summary; "" when the collector is not at hand
	Labels []string
	Help   string
}

// The parts of Desc.String() (client_golang's only view of a Desc's name, help and
// labels), each matched on its own so that a field added to it does not break them.
var (
	descName   = regexp.MustCompile(`fqName: ("(?:[^"\\]|\\.)*")`)
	descHelp   = regexp.MustCompile(`help: ("(?:[^"\\]|\\.)*")`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// Describe reads the name, help and variable labels of each metric c describes, typed
// as typ ("" when unknown).
func Describe(c prometheus.Collector, typ string) ([]Metric, error) {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	var out []Metric
	var errs []error
	for d := range ch {
		m, err := parseDesc(d.String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.Type = typ
		out = append(out, m)
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return out, nil
}

// TypeOf is the Prometheus type of one of client_golang's collectors, "" for another.
func TypeOf(c prometheus.Collector) string {
	switch c.(type) {
	case prometheus.Counter, *prometheus.CounterVec:
		return "counter"
	case prometheus.Gauge, *prometheus.GaugeVec:
		return "gauge"
	case prometheus.Histogram, *prometheus.HistogramVec:
		return "histogram"
	case prometheus.Summary, *prometheus.SummaryVec:
		return "summary"
	}
	return ""
}

func parseDesc(s string) (Metric, error) {
	name, help, labels := descName.FindStringSubmatch(s), descHelp.FindStringSubmatch(s), descLabels.FindStringSubmatch(s)
	if name == nil || help == nil || labels == nil {
		return Metric{}, fmt.Errorf("cannot read the metric of %s: client_golang's Desc.String() changed, adapt test/harness/refdocs", s)
	}
	var m Metric
	var err error
	if m.Name, err = strconv.Unquote(name[1]); err != nil {
		return Metric{}, err
	}
	if m.Help, err = strconv.Unquote(help[1]); err != nil {
		return Metric{}, err
	}
	if labels[1] != "" {
		for _, l := range strings.Split(labels[1], ",") {
			// A label with a constraint is written c(name).
			l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")
			m.Labels = append(m.Labels, l)
		}
	}
	return m, nil
}

// MetricsPage is the reference page of the metrics an endpoint serves: own, the
// program's, with their types; alongside, those of libraries it serves next to them; and
// the name prefixes (go, process, ...) of others it serves and the page does not list.
func MetricsPage(title, purpose, source string, own []Metric, alongsideIntro string, alongside []Metric, others []string) []byte {
	var b strings.Builder
	header(&b, title, purpose, source)
	b.WriteString("\n| metric | type | labels | what it counts |\n| --- | --- | --- | --- |\n")
	for _, m := range own {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", code(m.Name, true), m.Type, labelList(m.Labels), cell(m.Help))
	}
	if len(alongside) > 0 {
		fmt.Fprintf(&b, "\n%s\n\n| metric | labels | what it counts |\n| --- | --- | --- |\n", alongsideIntro)
		for _, m := range alongside {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", code(m.Name, true), labelList(m.Labels), cell(m.Help))
		}
	}
	if len(others) > 0 {
		prefixes := make([]string, len(others))
		for i, p := range others {
			prefixes[i] = code(p+"_*", false)
		}
		fmt.Fprintf(&b, "\nThe same endpoint also serves metrics this page does not list, the Go runtime's and the process's among them: %s.\n", strings.Join(prefixes, ", "))
	}
	return []byte(b.String())
}

func labelList(labels []string) string {
	if len(labels) == 0 {
		return "none"
	}
	return codeList(labels)
}
