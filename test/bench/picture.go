package bench

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// RatiosFile is the file name of the ratios' picture, next to the JSON.
const RatiosFile = "bench-ratios.svg"

// RatioText is how the picture writes a ratio.
func RatioText(r float64) string {
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// RatiosPicture draws, as SVG, a bar per row that has a ratio to its baseline (ours /
// baseline): the baseline is the line at 1, a row's target on the ratio a black mark
// across its bar, and a bar is green when its row met its target, red when it missed
// it, blue when it has none. An error if no row has a ratio.
func RatiosPicture(rows []Row) ([]byte, error) {
	var drawn []Row
	for _, r := range rows {
		if r.Ratio != nil && !math.IsInf(*r.Ratio, 0) && !math.IsNaN(*r.Ratio) {
			drawn = append(drawn, r)
		}
	}
	if len(drawn) == 0 {
		return nil, fmt.Errorf("no row has a ratio to its baseline to draw")
	}
	n := len(drawn)
	p := plot.New()
	p.Title.Text = "make bench: ours / baseline per row (1 = as the baseline)"
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.X.Label.Text = "ours / baseline (dashed: 1, the baseline; black mark: the target on the ratio; green: target met, red: missed, blue: no target)"
	hi := 1.0
	for _, r := range drawn {
		hi = math.Max(hi, *r.Ratio)
		if r.RatioTarget != nil {
			hi = math.Max(hi, *r.RatioTarget)
		}
	}
	p.X.Min, p.X.Max = 0, hi*1.18
	p.Y.Min, p.Y.Max = -0.6, float64(n)-0.4
	p.X.Padding, p.Y.Padding = 0, 0
	var ticks []plot.Tick
	for i, r := range drawn {
		ticks = append(ticks, plot.Tick{Value: rowY(i, n), Label: fmt.Sprintf("%s\n%s", r.Scenario, r.Metric)})
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Add(plotter.NewGrid())

	green, red, blue := color.RGBA{0x00, 0x9e, 0x73, 0xff}, color.RGBA{0xd5, 0x5e, 0x00, 0xff}, color.RGBA{0x56, 0xb4, 0xe9, 0xff}
	for i, r := range drawn {
		y := rowY(i, n)
		c := color.Color(blue)
		if r.Met != nil {
			c = red
			if *r.Met {
				c = green
			}
		}
		bar, err := plotter.NewPolygon(plotter.XYs{{X: 0, Y: y - 0.3}, {X: *r.Ratio, Y: y - 0.3}, {X: *r.Ratio, Y: y + 0.3}, {X: 0, Y: y + 0.3}})
		if err != nil {
			return nil, err
		}
		bar.Color, bar.LineStyle.Width = c, 0
		p.Add(bar)
		text := RatioText(*r.Ratio)
		switch {
		case r.RatioTarget != nil:
			text += " (target " + r.Target + ")"
		case r.Target != "":
			// A target on ours, not on the ratio.
			text += fmt.Sprintf(" (ours %.3g %s, target %s)", r.Ours, r.Unit, r.Target)
		}
		if r.RatioTarget != nil {
			t, err := plotter.NewLine(plotter.XYs{{X: *r.RatioTarget, Y: y - 0.42}, {X: *r.RatioTarget, Y: y + 0.42}})
			if err != nil {
				return nil, err
			}
			t.Width = vg.Points(2.5)
			p.Add(t)
		}
		end := *r.Ratio
		if r.RatioTarget != nil {
			end = math.Max(end, *r.RatioTarget)
		}
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: end + hi*0.01, Y: y}}, Labels: []string{text}})
		if err != nil {
			return nil, err
		}
		labels.TextStyle[0].YAlign = draw.YCenter
		p.Add(labels)
	}
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: p.Y.Min}, {X: 1, Y: p.Y.Max}})
	if err != nil {
		return nil, err
	}
	one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	one.Color = color.Gray{0x55}
	p.Add(one)

	c := vgsvg.New(13*vg.Inch, vg.Length(n)*0.5*vg.Inch+1.1*vg.Inch)
	p.Draw(draw.New(c))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// rowY is the y of row i of n, the first at the top.
func rowY(i, n int) float64 { return float64(n - 1 - i) }
