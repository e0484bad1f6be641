package failover

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
	"k8s.io/utils/ptr"
)

// The pictures: one timeline per scenario, each side's milestones on one time axis,
// drawn from a Report alone (so from the JSON of a past run too).

// PictureScenarios are the scenarios that have a picture, in the order they are drawn.
var PictureScenarios = []string{ScenarioNodeLoss, ScenarioNotReadyHiccup, ScenarioTCPDeadPeer, ScenarioZoneLoss}

// PictureFile is the file name of a scenario's picture: failover-<scenario>.svg.
func PictureFile(scenario string) string {
	return "failover-" + scenario + ".svg"
}

// Picture is one scenario's timeline as SVG.
type Picture struct {
	Scenario string
	SVG      []byte
}

// Pictures draws every scenario of PictureScenarios the report has rows for.
func (r *Report) Pictures() ([]Picture, error) {
	var out []Picture
	for _, s := range PictureScenarios {
		if !r.has(s) {
			continue
		}
		svg, err := r.Picture(s)
		if err != nil {
			return nil, err
		}
		out = append(out, Picture{Scenario: s, SVG: svg})
	}
	return out, nil
}

// Picture draws the timeline of one scenario of PictureScenarios; an error if the
// report has no rows of it.
func (r *Report) Picture(scenario string) ([]byte, error) {
	if !r.has(scenario) {
		return nil, fmt.Errorf("the report has no %s rows to draw", scenario)
	}
	var t timeline
	switch scenario {
	case ScenarioNodeLoss:
		t = r.nodeLossTimeline()
	case ScenarioNotReadyHiccup:
		t = r.hiccupTimeline()
	case ScenarioTCPDeadPeer:
		t = r.tcpTimeline()
	case ScenarioZoneLoss:
		t = r.zoneTimeline()
	default:
		return nil, fmt.Errorf("no picture for scenario %q (pictures: %s)", scenario, strings.Join(PictureScenarios, ", "))
	}
	return t.svg()
}

func (r *Report) has(scenario string) bool {
	if scenario == ScenarioTCPDeadPeer {
		return len(r.TCP) > 0
	}
	for _, row := range r.Rows {
		if row.Scenario == scenario {
			return true
		}
	}
	return false
}

// ParseReport reads the JSON that Report.JSON wrote: the cluster's rows and the TCP
// leg's, and the controller settings of the first cluster row. WallSeconds is not in
// it and stays 0.
func ParseReport(data []byte) (*Report, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("the failover JSON: %w", err)
	}
	rep := &Report{}
	for i, m := range raw {
		var head struct {
			Scenario string `json:"scenario"`
		}
		if err := json.Unmarshal(m, &head); err != nil {
			return nil, fmt.Errorf("row %d: %w", i, err)
		}
		if head.Scenario == ScenarioTCPDeadPeer {
			var row TCPRow
			if err := json.Unmarshal(m, &row); err != nil {
				return nil, fmt.Errorf("row %d: %w", i, err)
			}
			rep.TCP = append(rep.TCP, row)
			continue
		}
		var row Row
		if err := json.Unmarshal(m, &row); err != nil {
			return nil, fmt.Errorf("row %d: %w", i, err)
		}
		if len(rep.Rows) == 0 {
			rep.Settings = row.ControllerSettings
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

// milestone is a kind of moment, drawn with the same glyph in every picture.
type milestone struct {
	name  string
	shape draw.GlyphDrawer
	color color.Color
}

var (
	msHeartbeat   = milestone{"last heartbeat", draw.CircleGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}
	msKilled      = milestone{"node killed", draw.CrossGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}
	msUnreachable = milestone{"marked unreachable (tainted)", draw.TriangleGlyph{}, color.RGBA{0xe6, 0x9f, 0x00, 0xff}}
	msEvicted     = milestone{"pods evicted", draw.SquareGlyph{}, color.RGBA{0xd5, 0x5e, 0x00, 0xff}}
	msOutOfSvc    = milestone{"out-of-service taint (by hand)", draw.PlusGlyph{}, color.RGBA{0xcc, 0x79, 0xa7, 0xff}}
	msReplacement = milestone{"replacement Running", draw.PyramidGlyph{}, color.RGBA{0x56, 0xb4, 0xe9, 0xff}}
	msRecovered   = milestone{"all replicas Running", draw.RingGlyph{}, color.RGBA{0x00, 0x9e, 0x73, 0xff}}

	msNotReady      = milestone{"node reports NotReady", draw.CircleGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}
	msNotReadyTaint = milestone{"not-ready taint added", draw.TriangleGlyph{}, color.RGBA{0xe6, 0x9f, 0x00, 0xff}}
	msReadyAgain    = milestone{"node reports Ready again", draw.RingGlyph{}, color.RGBA{0x00, 0x9e, 0x73, 0xff}}
	msTaintRemoved  = milestone{"not-ready taint removed", draw.PyramidGlyph{}, color.RGBA{0x56, 0xb4, 0xe9, 0xff}}
	msWatched       = milestone{"watched until", draw.CrossGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}

	msLastPacket = milestone{"last packet received / data sent", draw.CircleGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}
	msFailed     = milestone{"connection failed (ETIMEDOUT)", draw.SquareGlyph{}, color.RGBA{0xd5, 0x5e, 0x00, 0xff}}
	msStillOpen  = milestone{"still open when the wait ended", draw.CrossGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}
	msModel      = milestone{"the kernel's model", draw.RingGlyph{}, color.RGBA{0x00, 0x72, 0xb2, 0xff}}

	msZoneKilled = milestone{"zone's nodes killed", draw.CrossGlyph{}, color.RGBA{0x55, 0x55, 0x55, 0xff}}
)

// mark is a milestone of a lane, at seconds on the picture's axis.
type mark struct {
	ms milestone
	at float64
}

// lane is one side's row of the picture.
type lane struct {
	label string
	marks []mark
	// end is said after the lane's last mark (what never happened).
	end string
}

// add appends a mark when the moment happened.
func (l *lane) add(ms milestone, at *float64) {
	if at != nil {
		l.marks = append(l.marks, mark{ms, *at})
	}
}

// addLoss appends the milestones of a node or zone loss that row has: killed (how the
// loss began), the last heartbeat (time 0), marked unreachable, evicted, the
// out-of-service taint (a StatefulSet's only), the first replacement Running and every
// replica Running again.
func (l *lane) addLoss(killed milestone, row Row) {
	l.add(killed, row.KilledSeconds)
	l.add(msHeartbeat, ptr.To(0.0))
	l.add(msUnreachable, row.UnreachableSeconds)
	l.add(msEvicted, row.EvictedSeconds)
	l.add(msOutOfSvc, row.TaintedSeconds)
	l.add(msReplacement, row.ReplacementSeconds)
	l.add(msRecovered, row.RecoverySeconds)
}

type timeline struct {
	title, xLabel string
	// lanes from top to bottom.
	lanes []lane
}

func (r *Report) nodeLossTimeline() timeline {
	var lanes []lane
	node := ""
	for _, row := range r.Rows {
		if row.Scenario != ScenarioNodeLoss && row.Scenario != ScenarioStatefulSet {
			continue
		}
		node = row.Node
		l := lane{label: nodeLossLabel(row)}
		l.addLoss(msKilled, row)
		if row.RecoverySeconds == nil {
			l.end = "not Running again"
		}
		lanes = append(lanes, l)
	}
	return timeline{
		title:  fmt.Sprintf("Node loss: %s stops, its pods' way back (%s)", node, settingsLine(r.Settings)),
		xLabel: "seconds after the node's last heartbeat",
		lanes:  lanes,
	}
}

func nodeLossLabel(row Row) string {
	side := "without ha-injector"
	switch {
	case row.Side == SideNative:
		side = "with ha-injector, native mode"
	case row.OptedIn:
		side = "with ha-injector"
	}
	what := "Deployment " + strings.TrimPrefix(row.Workload, "Deployment/")
	if row.Scenario == ScenarioStatefulSet {
		what = "StatefulSet " + strings.TrimPrefix(row.Workload, "StatefulSet/")
	}
	tol := "unreachable toleration: none"
	if row.TolerationSeconds != nil {
		tol = fmt.Sprintf("tolerates unreachable %d s", *row.TolerationSeconds)
	}
	return side + "\n" + what + ", " + tol
}

func (r *Report) hiccupTimeline() timeline {
	var lanes []lane
	node := ""
	for _, row := range r.Rows {
		if row.Scenario != ScenarioNotReadyHiccup && row.Scenario != ScenarioNotReadyControl {
			continue
		}
		node = row.Node
		side := "without ha-injector"
		switch {
		case row.Scenario == ScenarioNotReadyControl:
			side = "control (opted out)"
		case row.OptedIn:
			side = "with ha-injector"
		}
		tol := "no not-ready toleration"
		if row.NotReadyTolerationSeconds != nil {
			tol = fmt.Sprintf("tolerates not-ready %d s", *row.NotReadyTolerationSeconds)
		}
		evicted := "?"
		if row.Evicted != nil {
			evicted = fmt.Sprintf("%d of %d pods evicted", *row.Evicted, row.Victims)
		}
		l := lane{label: side + "\n" + tol + ", " + evicted}
		l.add(msNotReady, ptr.To(0.0))
		l.add(msNotReadyTaint, row.NotReadyTaintSeconds)
		l.add(msReadyAgain, row.NotReadyForSeconds)
		l.add(msTaintRemoved, row.NotReadyTaintRemovedSeconds)
		if row.Evicted != nil && *row.Evicted > 0 {
			l.add(msEvicted, row.EvictedSeconds)
		}
		l.add(msWatched, row.WatchedSeconds)
		lanes = append(lanes, l)
	}
	return timeline{
		title:  fmt.Sprintf("Not-ready hiccup: %s reports NotReady, its Lease still renewed", node),
		xLabel: "seconds after the node reported NotReady",
		lanes:  lanes,
	}
}

func (r *Report) tcpTimeline() timeline {
	// The axis ends a little past the longest measured wait; a model beyond it is
	// only written in its lane's label.
	longest := 0.0
	for _, row := range r.TCP {
		for _, f := range []*float64{row.FailedAfterSeconds, row.StillOpenAfterSeconds} {
			if f != nil {
				longest = math.Max(longest, *f)
			}
		}
	}
	var lanes []lane
	kernel := ""
	for _, row := range r.TCP {
		kernel = row.Kernel
		what := "idle connection, keepalive on"
		if row.Connection == ConnSending {
			what = "sending, data unacknowledged"
		}
		side := "without ha-injector (kernel defaults)"
		if row.OptedIn {
			side = "with ha-injector (sysctls)"
		}
		model := formatSeconds(time.Duration(row.ModelSeconds * float64(time.Second)))
		l := lane{label: side + "\n" + what + ", model " + model}
		l.add(msLastPacket, ptr.To(0.0))
		l.add(msFailed, row.FailedAfterSeconds)
		l.add(msStillOpen, row.StillOpenAfterSeconds)
		if row.ModelSeconds <= longest*1.25 {
			l.add(msModel, ptr.To(row.ModelSeconds))
		} else {
			l.end = "fails at " + model + " by the model"
		}
		lanes = append(lanes, l)
	}
	return timeline{
		title:  fmt.Sprintf("TCP to a dead peer: when the client's connection fails (Linux %s)", kernel),
		xLabel: "seconds after the last packet from the peer (idle) or the unacknowledged write (sending)",
		lanes:  lanes,
	}
}

func (r *Report) zoneTimeline() timeline {
	var lanes []lane
	zone := ""
	for _, row := range r.Rows {
		if row.Scenario != ScenarioZoneLoss {
			continue
		}
		zone = row.DeadZone
		side := "without ha-injector"
		switch {
		case row.Workload == "Deployment/"+ZoneControl:
			side = "control: DoNotSchedule spread, no nodeTaintsPolicy"
		case row.Namespace == HardZoneNS:
			side = "with ha-injector, zone spread DoNotSchedule"
		case row.OptedIn:
			side = "with ha-injector, default policy"
		}
		ready := "?"
		switch {
		case row.SecondsWithoutReady != nil && *row.SecondsWithoutReady > 0:
			ready = fmt.Sprintf("none Ready for %s s", strconv.FormatFloat(*row.SecondsWithoutReady, 'f', -1, 64))
		case row.MinReady != nil:
			ready = fmt.Sprintf("never fewer than %d Ready", *row.MinReady)
		}
		l := lane{label: side + "\n" + fmt.Sprintf("%d of 3 replicas in the zone, %s", row.Victims, ready)}
		l.addLoss(msZoneKilled, row)
		if row.RecoverySeconds == nil {
			l.end = "replacement never Running"
		}
		lanes = append(lanes, l)
	}
	return timeline{
		title:  fmt.Sprintf("Zone loss: every node of %s stops at once (%s)", zone, settingsLine(r.Settings)),
		xLabel: "seconds after the zone's last heartbeat",
		lanes:  lanes,
	}
}

func settingsLine(s ControllerSettings) string {
	if s.KubernetesDefaults {
		return "Kubernetes' default timings"
	}
	return "shortened timings"
}

// secondsText is how a mark's time is written next to it.
func secondsText(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64) + " s"
}

// The picture's size; the legend is drawn right of the plot.
const (
	pictureWidth = 13 * vg.Inch
	legendWidth  = 3.3 * vg.Inch
	laneHeight   = 1.05 * vg.Inch
)

// labelSlots are where a mark's time may be written, in lanes (1 is the distance
// between two lanes) above (+) or below (-) its lane, tried in this order.
var labelSlots = []float64{0.19, -0.19, 0.36, -0.36}

// svg draws the timeline: a lane per side, top to bottom, each mark a glyph of its
// milestone with its time written above or below it, where it does not cover another.
func (t timeline) svg() ([]byte, error) {
	if len(t.lanes) == 0 {
		return nil, fmt.Errorf("%s: nothing to draw", t.title)
	}
	p := plot.New()
	p.Title.Text = t.title
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.X.Label.Text = t.xLabel
	n := len(t.lanes)
	lo, hi, ends := 0.0, 0.0, false
	for _, l := range t.lanes {
		for _, m := range l.marks {
			lo, hi = math.Min(lo, m.at), math.Max(hi, m.at)
		}
		ends = ends || l.end != ""
	}
	span := hi - lo
	if span <= 0 {
		span = 1
	}
	right := 0.05
	if ends {
		// Room for what never happened.
		right = 0.28
	}
	p.X.Min, p.X.Max = lo-span*0.04, hi+span*right
	p.Y.Min, p.Y.Max = -0.55, float64(n)-0.45
	p.Y.Padding, p.X.Padding = 0, 0
	p.X.Tick.Marker = secondTicks{}
	var ticks []plot.Tick
	for i, l := range t.lanes {
		ticks = append(ticks, plot.Tick{Value: laneY(i, n), Label: l.label})
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Add(plotter.NewGrid())

	height := laneHeight*vg.Length(n) + 1.2*vg.Inch
	c := vgsvg.New(pictureWidth, height)
	dc := draw.New(c)
	plotArea := draw.Crop(dc, 0, -legendWidth, 0, 0)
	// Data units per point of the x axis, to keep the times written apart.
	perPoint := (p.X.Max - p.X.Min) / float64(p.DataCanvas(plotArea).Size().X)

	var legend []milestone
	seen := map[string]bool{}
	for i, l := range t.lanes {
		y := laneY(i, n)
		if len(l.marks) > 0 {
			first, last := l.marks[0].at, l.marks[0].at
			for _, m := range l.marks {
				first, last = math.Min(first, m.at), math.Max(last, m.at)
			}
			line, err := plotter.NewLine(plotter.XYs{{X: first, Y: y}, {X: last, Y: y}})
			if err != nil {
				return nil, err
			}
			line.Color = color.Gray{0x99}
			line.Width = vg.Points(2)
			p.Add(line)
		}
		// The right end, in x, of the last time written in each slot.
		slotEnd := make([]float64, len(labelSlots))
		for k := range slotEnd {
			slotEnd[k] = math.Inf(-1)
		}
		for _, m := range sortedMarks(l.marks) {
			sc, err := plotter.NewScatter(plotter.XYs{{X: m.at, Y: y}})
			if err != nil {
				return nil, err
			}
			sc.Shape, sc.Color, sc.Radius = m.ms.shape, m.ms.color, vg.Points(5)
			p.Add(sc)
			if !seen[m.ms.name] {
				seen[m.ms.name] = true
				legend = append(legend, m.ms)
			}
			labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: m.at}}, Labels: []string{secondsText(m.at)}})
			if err != nil {
				return nil, err
			}
			style := &labels.TextStyle[0]
			style.XAlign, style.YAlign, style.Color = draw.XCenter, draw.YCenter, m.ms.color
			half := float64(style.Width(secondsText(m.at))) * perPoint / 2
			gap := 4 * perPoint
			slot := 0
			for k := range labelSlots {
				if slotEnd[k]+gap <= m.at-half {
					slot = k
					break
				}
				if slotEnd[k] < slotEnd[slot] {
					slot = k
				}
			}
			slotEnd[slot] = m.at + half
			labels.XYs[0].Y = y + labelSlots[slot]
			p.Add(labels)
		}
		if l.end != "" {
			x := p.X.Min
			for _, m := range l.marks {
				x = math.Max(x, m.at)
			}
			labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: x + 10*perPoint, Y: y}}, Labels: []string{l.end}})
			if err != nil {
				return nil, err
			}
			labels.TextStyle[0].YAlign = draw.YCenter
			p.Add(labels)
		}
	}

	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	leg.ThumbnailWidth = vg.Points(14)
	for _, ms := range legend {
		sc, err := plotter.NewScatter(plotter.XYs{{}})
		if err != nil {
			return nil, err
		}
		sc.Shape, sc.Color, sc.Radius = ms.shape, ms.color, vg.Points(5)
		leg.Add(ms.name, sc)
	}

	p.Draw(plotArea)
	leg.Draw(draw.Crop(dc, pictureWidth-legendWidth+vg.Points(12), 0, 0, -vg.Points(30)))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// secondTicks marks the time axis every round number of seconds, about ten times.
type secondTicks struct{}

func (secondTicks) Ticks(lo, hi float64) []plot.Tick {
	step := 1.0
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600} {
		step = s
		if (hi-lo)/s <= 12 {
			break
		}
	}
	var out []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		if v == 0 {
			v = 0 // not -0
		}
		out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
		// Minor ticks between.
		if mid := v + step/2; mid <= hi {
			out = append(out, plot.Tick{Value: mid})
		}
	}
	return out
}

// laneY is the y of lane i of n, the first at the top.
func laneY(i, n int) float64 { return float64(n - 1 - i) }

func sortedMarks(ms []mark) []mark {
	out := slices.Clone(ms)
	slices.SortStableFunc(out, func(a, b mark) int { return cmp.Compare(a.at, b.at) })
	return out
}
