//! A small SVG charting kit: axes with nice ticks, line and bar charts, sized in pixels. No
//! JavaScript and no external assets, so the page opens offline.

use super::*;

/// Roughly how wide `chars` characters are at the plots' 11px font: layout without a browser to
/// measure text.
pub(super) fn text_width(chars: usize) -> f64 {
    chars as f64 * 6.4
}

/// A coordinate as written into SVG: one decimal, never NaN, never "-0.0".
pub(super) struct Px(pub(super) f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}", finite(self.0) + 0.0)
    }
}

/// An axis range widened to whole multiples of a 1, 2 or 5 × 10^k step: ticks a reader can
/// interpolate between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ticks {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) step: f64,
}

impl Ticks {
    /// About `target` intervals over `lo..hi`. A degenerate range (empty, reversed or not
    /// finite) still gets a usable axis, since an arm that sent nothing is a legitimate result.
    pub(super) fn new(lo: f64, hi: f64, target: usize) -> Ticks {
        let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
            (true, true) if hi > lo => (lo, hi),
            (true, true) if lo > hi => (hi, lo),
            (true, _) => (lo, lo + lo.abs().max(1.0)),
            (false, true) => (hi - hi.abs().max(1.0), hi),
            (false, false) => (0.0, 1.0),
        };
        let step = nice_step((hi - lo) / target.max(1) as f64);
        // The epsilon keeps rounding noise (0.30000000000000004 / 0.1) from adding a tick.
        Ticks {
            lo: ((lo / step) + 1e-9).floor() * step,
            hi: ((hi / step) - 1e-9).ceil() * step,
            step,
        }
    }

    /// The same axis with a step of at least 1, for counts of whole things such as days.
    pub(super) fn whole(self) -> Ticks {
        if self.step >= 1.0 {
            return self;
        }
        let lo = self.lo.floor();
        Ticks {
            lo,
            hi: self.hi.ceil().max(lo + 1.0),
            step: 1.0,
        }
    }

    pub(super) fn values(&self) -> Vec<f64> {
        let n = finite(((self.hi - self.lo) / self.step).round()).clamp(0.0, 1000.0) as usize;
        (0..=n).map(|i| self.lo + i as f64 * self.step).collect()
    }

    pub(super) fn labelled(&self, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
        self.values().into_iter().map(|v| (v, label(v))).collect()
    }

    /// A tick label with as many decimals as the step needs, and k or M past ten thousand so
    /// that labels fit the margin.
    pub(super) fn label(&self, v: f64) -> String {
        let top = self.lo.abs().max(self.hi.abs());
        let (scale, suffix) = if top >= 1e6 {
            (1e6, "M")
        } else if top >= 1e4 {
            (1e3, "k")
        } else {
            (1.0, "")
        };
        if v == 0.0 {
            return "0".to_string();
        }
        let decimals = decimals(self.step / scale);
        if scale == 1.0 && decimals == 0 && v >= 0.0 {
            return thousands(v.round() as u64);
        }
        format!("{:.*}{suffix}", decimals, finite(v / scale))
    }

    pub(super) fn percent(&self, v: f64) -> String {
        format!("{:.*}%", decimals(self.step * 100.0), finite(v * 100.0))
    }
}

pub(super) fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let norm = raw / magnitude;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Decimals needed to tell ticks `step` apart: 0 for 1 and up, 1 for 0.1..1, 2 for 0.01..0.1.
pub(super) fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        return 0;
    }
    (-step.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize
}

pub(super) struct Margin {
    pub(super) top: f64,
    pub(super) right: f64,
    pub(super) bottom: f64,
    pub(super) left: f64,
}

#[derive(Clone, Copy)]
pub(super) enum Mark {
    Box,
    Line,
    Dash,
    Dot,
}

/// One SVG plot: a plot area inside margins, data ranges mapped onto it, and the legend, which
/// goes below the x axis because only there can it wrap onto more lines without moving the plot.
pub(super) struct Chart {
    pub(super) width: f64,
    pub(super) height: f64,
    pub(super) margin: Margin,
    pub(super) x: (f64, f64),
    pub(super) y: (f64, f64),
    pub(super) body: String,
    pub(super) legend: Vec<(&'static str, Mark, String)>,
}

impl Chart {
    /// `plot_height` is the height of the plot area alone; margins and legend add to it.
    pub(super) fn new(
        width: f64,
        plot_height: f64,
        margin: Margin,
        x: (f64, f64),
        y: (f64, f64),
    ) -> Chart {
        Chart {
            width,
            height: margin.top + plot_height + margin.bottom,
            margin,
            x,
            y,
            body: String::new(),
            legend: Vec::new(),
        }
    }

    pub(super) fn left(&self) -> f64 {
        self.margin.left
    }

    pub(super) fn right(&self) -> f64 {
        (self.width - self.margin.right).max(self.margin.left + 1.0)
    }

    pub(super) fn top(&self) -> f64 {
        self.margin.top
    }

    pub(super) fn bottom(&self) -> f64 {
        (self.height - self.margin.bottom).max(self.margin.top + 1.0)
    }

    /// Data to pixels. Values outside the range are pinned to its edge so nothing is drawn
    /// outside the plot area.
    pub(super) fn sx(&self, x: f64) -> f64 {
        scale(x, self.x, self.left(), self.right())
    }

    pub(super) fn sy(&self, y: f64) -> f64 {
        scale(y, self.y, self.bottom(), self.top())
    }

    pub(super) fn y_axis(&mut self, ticks: &[(f64, String)], title: &str, grid: bool) {
        let (l, r) = (self.left(), self.right());
        self.body.push_str("<g fill=\"#444\">");
        for (v, label) in ticks {
            let y = self.sy(*v);
            if grid {
                w!(
                    self.body,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#eaeef2\"/>",
                    Px(l),
                    Px(r),
                    Px(y),
                    Px(y)
                );
            }
            w!(
                self.body,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                Px(l - 6.0),
                Px(y + 4.0),
                escape(label)
            );
        }
        w!(
            self.body,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>",
            Px(l),
            Px(l),
            Px(self.top()),
            Px(self.bottom())
        );
        if !title.is_empty() {
            let mid = (self.top() + self.bottom()) / 2.0;
            w!(
                self.body,
                "<text transform=\"translate(12 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
                Px(mid),
                escape(title)
            );
        }
        self.body.push_str("</g>");
    }

    pub(super) fn x_axis(&mut self, ticks: &[(f64, String)], title: &str, grid: bool) {
        let (t, b) = (self.top(), self.bottom());
        self.body.push_str("<g fill=\"#444\">");
        for (v, label) in ticks {
            let x = self.sx(*v);
            if grid {
                w!(
                    self.body,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#eaeef2\"/>",
                    Px(x),
                    Px(x),
                    Px(t),
                    Px(b)
                );
            }
            w!(
                self.body,
                "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                Px(x),
                Px(x),
                Px(b),
                Px(b + 4.0),
                Px(x),
                Px(b + 16.0),
                escape(label)
            );
        }
        w!(
            self.body,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>",
            Px(self.left()),
            Px(self.right()),
            Px(b),
            Px(b)
        );
        if !title.is_empty() {
            w!(
                self.body,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                Px((self.left() + self.right()) / 2.0),
                Px(b + 31.0),
                escape(title)
            );
        }
        self.body.push_str("</g>");
    }

    /// Groups what `draw` adds under one `<title>`, which browsers show on hover over any of it.
    pub(super) fn series(&mut self, title: &str, draw: impl FnOnce(&mut Chart)) {
        w!(self.body, "<g><title>{}</title>", escape(title));
        draw(self);
        self.body.push_str("</g>");
    }

    pub(super) fn polyline(&mut self, points: &[(f64, f64)], colour: &str) {
        let mut coords = String::new();
        for &(x, y) in points {
            w!(coords, "{},{} ", Px(self.sx(x)), Px(self.sy(y)));
        }
        w!(
            self.body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
             stroke-linejoin=\"round\"/>",
            coords.trim_end()
        );
    }

    /// A rectangle between two data corners; one with no visible extent is left out rather than
    /// drawn as a hairline.
    pub(super) fn rect(&mut self, a: (f64, f64), b: (f64, f64), colour: &str, title: &str) {
        let (x0, x1) = (self.sx(a.0), self.sx(b.0));
        let (y0, y1) = (self.sy(a.1), self.sy(b.1));
        let (w, h) = ((x1 - x0).abs(), (y1 - y0).abs());
        if w < 0.05 || h < 0.05 {
            return;
        }
        w!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\">\
             <title>{}</title></rect>",
            Px(x0.min(x1)),
            Px(y0.min(y1)),
            Px(w),
            Px(h),
            escape(title)
        );
    }

    pub(super) fn circle(&mut self, at: (f64, f64), radius: f64, colour: &str, title: &str) {
        w!(
            self.body,
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{colour}\" fill-opacity=\"0.7\" \
             stroke=\"{colour}\"><title>{}</title></circle>",
            Px(self.sx(at.0)),
            Px(self.sy(at.1)),
            Px(radius),
            escape(title)
        );
    }

    pub(super) fn line(&mut self, a: (f64, f64), b: (f64, f64), colour: &str, dashed: bool) {
        w!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" \
             stroke-width=\"1.5\"{}/>",
            Px(self.sx(a.0)),
            Px(self.sy(a.1)),
            Px(self.sx(b.0)),
            Px(self.sy(b.1)),
            if dashed {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            }
        );
    }

    /// Text at pixel coordinates, for labels placed relative to what was drawn.
    pub(super) fn text(&mut self, at: (f64, f64), anchor: &str, text: &str) {
        w!(
            self.body,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#444\">{}</text>",
            Px(at.0),
            Px(at.1),
            escape(text)
        );
    }

    pub(super) fn legend_entry(&mut self, colour: &'static str, mark: Mark, label: &str) {
        self.legend.push((colour, mark, label.to_string()));
    }

    pub(super) fn finish(self, title: &str) -> String {
        let mut legend = String::new();
        let (mut x, mut y) = (self.left(), self.height + 4.0);
        let mut rows = 0;
        for (colour, mark, label) in &self.legend {
            let w = 22.0 + text_width(label.chars().count()) + 16.0;
            if rows == 0 || (x + w > self.width && x > self.left()) {
                if rows > 0 {
                    y += 18.0;
                }
                x = self.left();
                rows += 1;
            }
            let mid = y + 7.0;
            match mark {
                Mark::Box => w!(
                    legend,
                    "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"10\" rx=\"2\" fill=\"{colour}\"/>",
                    Px(x),
                    Px(mid - 5.0)
                ),
                Mark::Line | Mark::Dash => w!(
                    legend,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{colour}\" \
                     stroke-width=\"2\"{}/>",
                    Px(x),
                    Px(x + 16.0),
                    Px(mid),
                    Px(mid),
                    if matches!(mark, Mark::Dash) {
                        " stroke-dasharray=\"4 3\""
                    } else {
                        ""
                    }
                ),
                Mark::Dot => w!(
                    legend,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"{colour}\" fill-opacity=\"0.7\"/>",
                    Px(x + 7.0),
                    Px(mid)
                ),
            }
            w!(
                legend,
                "<text x=\"{}\" y=\"{}\" fill=\"#444\">{}</text>",
                Px(x + 22.0),
                Px(mid + 4.0),
                escape(label)
            );
            x += w;
        }
        let height = if rows == 0 { self.height } else { y + 20.0 };
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" \
             height=\"{h}\" font-family=\"system-ui, sans-serif\" font-size=\"11\">\
             <title>{}</title>{}<g class=\"legend\">{legend}</g></svg>",
            escape(title),
            self.body,
            w = Px(self.width),
            h = Px(height),
        )
    }
}

pub(super) fn scale(v: f64, (d0, d1): (f64, f64), r0: f64, r1: f64) -> f64 {
    let span = d1 - d0;
    if !(v.is_finite() && span.is_finite() && span > 0.0) {
        return r0;
    }
    r0 + ((v - d0) / span).clamp(0.0, 1.0) * (r1 - r0)
}
