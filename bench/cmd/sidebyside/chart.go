package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	oursColor    = color.RGBA{R: 0x1f, G: 0x6f, B: 0xd0, A: 0xff}
	mercureColor = color.RGBA{R: 0xe0, G: 0x6c, B: 0x10, A: 0xff}
)

// chart draws fan-out latency (p50, p99) and server CPU per delivery by
// subscriber count, ours against Mercure.
func chart(path string, res *results) error {
	lat := plot.New()
	lat.Title.Text = "Fan-out delivery latency (one topic)"
	lat.X.Label.Text = "subscribers (log scale)"
	lat.Y.Label.Text = "latency, ms (log scale)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = ticks125{}
	lat.Legend.Top = false
	lat.Legend.Left = false
	lat.Legend.XOffs = -vg.Points(6)
	lat.Legend.YOffs = vg.Points(6)
	lat.Add(plotter.NewGrid())

	cpu := plot.New()
	cpu.Title.Text = "Server CPU per delivery"
	cpu.X.Label.Text = "subscribers (log scale)"
	cpu.Y.Label.Text = "µs of CPU (user + system)"
	cpu.Y.Min = 0
	cpu.Y.Tick.Marker = linTicks{}
	lat.X.Scale = plot.LogScale{}
	cpu.X.Scale = plot.LogScale{}
	cpu.Legend.Top = true
	cpu.Legend.Left = true
	cpu.Legend.XOffs = vg.Points(6)
	cpu.Add(plotter.NewGrid())

	maxCPU := 0.0
	for _, s := range []struct {
		name  string
		label string
		color color.Color
	}{{oursName, "caddy-sse", oursColor}, {mercureName, "Mercure", mercureColor}} {
		var p50, p99, cpuPts plotter.XYs
		for _, r := range res.Fanout {
			if r.Server != s.name || r.Lat.N == 0 {
				continue
			}
			x := float64(r.N)
			p50 = append(p50, plotter.XY{X: x, Y: max(r.Lat.P50, 0.01)})
			p99 = append(p99, plotter.XY{X: x, Y: max(r.Lat.P99, 0.01)})
			cpuPts = append(cpuPts, plotter.XY{X: x, Y: r.USPerDeliv})
			maxCPU = max(maxCPU, r.USPerDeliv)
		}
		if len(p50) == 0 {
			continue
		}
		if err := addLine(lat, p50, s.label+" p50", s.color, false); err != nil {
			return err
		}
		if err := addLine(lat, p99, s.label+" p99", s.color, true); err != nil {
			return err
		}
		if err := addLine(cpu, cpuPts, s.label, s.color, false); err != nil {
			return err
		}
	}
	cpu.Y.Max = maxCPU * 1.35
	var xs xTicks
	for _, r := range res.Fanout {
		xs = append(xs, float64(r.N))
	}
	lat.X.Tick.Marker = xs
	cpu.X.Tick.Marker = xs

	const w, h = 12 * vg.Inch, 4.8 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110))
	dc := draw.New(img)
	// white background
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	t := draw.Tiles{Rows: 1, Cols: 2, PadTop: vg.Points(8), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(12), PadX: vg.Points(28)}
	canvases := plot.Align([][]*plot.Plot{{lat, cpu}}, t, dc)
	lat.Draw(canvases[0][0])
	cpu.Draw(canvases[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("chart: %w", err)
	}
	return f.Close()
}

func addLine(p *plot.Plot, pts plotter.XYs, label string, c color.Color, dashed bool) error {
	l, sc, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(2)
	sc.Color = c
	sc.Radius = vg.Points(3.5)
	sc.Shape = draw.CircleGlyph{}
	if dashed {
		l.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
		sc.Shape = draw.BoxGlyph{}
	}
	p.Add(l, sc)
	p.Legend.Add(label, l, sc)
	return nil
}

// ticks125 labels a log axis at 1, 2, 5 × 10^k.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var t []plot.Tick
	for d := math.Pow(10, math.Floor(math.Log10(lo))); d <= hi; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v >= lo && v <= hi {
				t = append(t, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
			}
		}
		for _, m := range []float64{3, 4, 6, 7, 8, 9} {
			if v := d * m; v >= lo && v <= hi {
				t = append(t, plot.Tick{Value: v})
			}
		}
	}
	return t
}

// xTicks labels the measured subscriber counts.
type xTicks []float64

func (x xTicks) Ticks(lo, hi float64) []plot.Tick {
	var t []plot.Tick
	seen := map[float64]bool{}
	for _, v := range x {
		if v >= lo && v <= hi && !seen[v] {
			seen[v] = true
			t = append(t, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
		}
	}
	return t
}

// linTicks labels a linear axis at a 1, 2 or 5 × 10^k step, about 6 labels.
type linTicks struct{}

func (linTicks) Ticks(lo, hi float64) []plot.Tick {
	if hi <= lo {
		return nil
	}
	raw := (hi - lo) / 6
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := p
	for _, m := range []float64{1, 2, 5, 10} {
		if p*m >= raw {
			step = p * m
			break
		}
	}
	var t []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step/1e6; v += step {
		t = append(t, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
		if minor := v + step/2; minor <= hi {
			t = append(t, plot.Tick{Value: minor})
		}
	}
	return t
}
