//! Charts as SVG, drawn on the server by plain functions: inline in the page, readable without
//! JavaScript, nothing fetched. Each chart is an `<svg role="img">` with a `<title>` and a
//! `<desc>` (its text alternative), a `<title>` on every bar (its value), and a data table after it.
//! Colours are presentation attributes (the Content-Security-Policy refuses inline styles), and
//! never the only signal: the legend and the tables name every series.

use maud::{Markup, html};

/// One series of a stacked bar chart: a name, a colour, a value per category.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend, the bars' titles and the table.
    pub name: String,
    /// An SVG colour (`#4c78a8`).
    pub colour: &'static str,
    /// One value per category (missing ones count as zero).
    pub values: Vec<f64>,
}

/// A stacked bar chart: one column per category, the series stacked bottom to top.
#[derive(Debug, Clone, PartialEq)]
pub struct StackedBars<'a> {
    /// The id of the `<svg>` (the title and description ids derive from it).
    pub id: &'a str,
    /// The chart's title.
    pub title: &'a str,
    /// What the values count, for the axis and the description (`credits`, `calls`).
    pub unit: &'a str,
    /// The categories, left to right (days, minutes).
    pub categories: Vec<String>,
    /// Label every n-th category on the axis (at least 1); the first and last are always labelled.
    pub label_every: usize,
    /// The series, bottom to top.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;
/// A drawn bar: its series, value, top and height.
type Bar = (usize, f64, f64, f64);

/// The widest bar.
const BAR_MAX: f64 = 60.0;
/// Horizontal lines (and labels) of the value axis, zero excluded.
const TICKS: usize = 4;

/// The smallest "nice" number (1, 2 or 5 times a power of ten) at or above `v`; 1 for nothing.
pub fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|c| *c >= v * (1.0 - 1e-12)).unwrap_or(10.0 * power)
}

/// A value for an axis or a title: whole numbers as they are, large ones shortened (`12.5k`,
/// `3.2M`), small ones with up to two decimals.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
    };
    if a >= 1e9 {
        format!("{}G", trim(format!("{:.1}", v / 1e9)))
    } else if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else {
        trim(format!("{v:.2}"))
    }
}

/// A coordinate, to a tenth of a pixel.
fn px(v: f64) -> String {
    format!("{:.1}", v)
}

impl StackedBars<'_> {
    /// The value of series `s` in category `c` (zero when missing, negative or not a number).
    fn value(&self, s: usize, c: usize) -> f64 {
        self.series[s].values.get(c).copied().filter(|v| v.is_finite() && *v > 0.0).unwrap_or(0.0)
    }

    /// The height of the tallest stack.
    pub fn peak(&self) -> f64 {
        (0..self.categories.len()).map(|c| (0..self.series.len()).map(|s| self.value(s, c)).sum()).fold(0.0, f64::max)
    }

    /// The totals per series, for the description.
    fn totals(&self) -> Vec<f64> {
        (0..self.series.len()).map(|s| (0..self.categories.len()).map(|c| self.value(s, c)).sum()).collect()
    }

    /// The chart as inline SVG, followed by its data table.
    pub fn render(&self) -> Markup {
        let n = self.categories.len().max(1);
        let top = nice_ceiling(self.peak());
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot = plot_w / n as f64;
        // Bars take most of their slot, but a few columns do not make slabs.
        let bar_w = (slot * 0.72).clamp(1.0, BAR_MAX);
        let y = |v: f64| TOP + plot_h - v / top * plot_h;
        let every = self.label_every.max(1);
        let (title_id, desc_id) = (format!("{}-title", self.id), format!("{}-desc", self.id));
        let totals = self.totals();
        // Per column: its index, label, left edge, and bars (series, value, top, height) bottom up.
        let columns: Vec<(usize, &String, f64, Vec<Bar>)> = self
            .categories
            .iter()
            .enumerate()
            .map(|(c, label)| {
                let x = LEFT + c as f64 * slot + (slot - bar_w) / 2.0;
                let mut base = 0.0;
                let mut stack = Vec::new();
                for s in 0..self.series.len() {
                    let v = self.value(s, c);
                    if v > 0.0 {
                        stack.push((s, v, y(base + v), (v / top * plot_h).max(0.5)));
                        base += v;
                    }
                }
                (c, label, x, stack)
            })
            .collect();
        let description = if self.peak() == 0.0 {
            format!("No {} in this period.", self.unit)
        } else {
            let parts: Vec<String> =
                self.series.iter().zip(&totals).map(|(s, t)| format!("{} {}", s.name, short(*t))).collect();
            format!(
                "{} {} over {} {}: {}.",
                short(totals.iter().sum()),
                self.unit,
                self.categories.len(),
                if self.categories.len() == 1 { "column" } else { "columns" },
                parts.join(", ")
            )
        };
        html! {
            figure.chart {
                svg id=(self.id) class="chart" role="img" aria-labelledby={ (title_id) " " (desc_id) }
                    viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } preserveAspectRatio="xMidYMid meet"
                    xmlns="http://www.w3.org/2000/svg" data-categories=(self.categories.len()) data-peak=(self.peak()) {
                    title id=(title_id) { (self.title) }
                    desc id=(desc_id) { (description) }
                    // Legend, top left, in series order.
                    g.legend {
                        @for (i, s) in self.series.iter().enumerate() {
                            rect x=(px(LEFT + i as f64 * 130.0)) y="8" width="12" height="12" fill=(s.colour) {}
                            text x=(px(LEFT + i as f64 * 130.0 + 18.0)) y="18" font-size="12" fill="#333" { (s.name) }
                        }
                    }
                    // Value axis: grid lines and labels.
                    g.axis {
                        @for k in 0..=TICKS {
                            @let v = top * k as f64 / TICKS as f64;
                            line x1=(px(LEFT)) x2=(px(WIDTH - RIGHT)) y1=(px(y(v))) y2=(px(y(v)))
                                stroke=(if k == 0 { "#555" } else { "#ddd" }) stroke-width="1" {}
                            text x=(px(LEFT - 6.0)) y=(px(y(v) + 4.0)) text-anchor="end" font-size="11" fill="#555" { (short(v)) }
                        }
                        text x="14" y=(px(TOP + plot_h / 2.0)) text-anchor="middle" font-size="11" fill="#555"
                            transform={ "rotate(-90 14 " (px(TOP + plot_h / 2.0)) ")" } { (self.unit) }
                    }
                    @for (c, label, x, stack) in &columns {
                        g.column data-label=(label) {
                            @for (s, v, top_y, h) in stack {
                                rect.bar x=(px(*x)) y=(px(*top_y)) width=(px(bar_w)) height=(px(*h))
                                    fill=(self.series[*s].colour) data-series=(self.series[*s].name) data-value=(v) {
                                    title { (label) ": " (self.series[*s].name) " " (short(*v)) " " (self.unit) }
                                }
                            }
                            @if c % every == 0 || c + 1 == self.categories.len() {
                                text x=(px(x + bar_w / 2.0)) y=(px(HEIGHT - BOTTOM + 16.0)) text-anchor="middle"
                                    font-size="11" fill="#555" { (label) }
                            }
                        }
                    }
                }
                figcaption { (description) }
                details {
                    summary { "Data of “" (self.title) "”" }
                    table.data {
                        thead { tr { th { "" } @for s in &self.series { th.num { (s.name) } } } }
                        tbody {
                            @for (c, label) in self.categories.iter().enumerate() {
                                @if (0..self.series.len()).any(|s| self.value(s, c) > 0.0) {
                                    tr { th { (label) } @for s in 0..self.series.len() { td.num { (short(self.value(s, c))) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: Vec<Vec<f64>>) -> StackedBars<'static> {
        let n = values.first().map_or(0, Vec::len);
        StackedBars {
            id: "c",
            title: "Credits per day",
            unit: "credits",
            categories: (0..n).map(|i| format!("d{i}")).collect(),
            label_every: 7,
            series: values
                .into_iter()
                .enumerate()
                .map(|(i, values)| Series { name: format!("s{i}"), colour: "#000", values })
                .collect(),
        }
    }

    fn bars(svg: &str) -> Vec<(f64, f64)> {
        // (y, height) of each bar, in document order.
        svg.split("<rect class=\"bar\"")
            .skip(1)
            .map(|r| {
                let attr = |name: &str| -> f64 {
                    let at = r.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    r[at..].split('"').next().unwrap().parse().unwrap()
                };
                (attr("y"), attr("height"))
            })
            .collect()
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(0.03), 0.05);
        assert_eq!(nice_ceiling(4.2e12), 5e12);
    }

    #[test]
    fn bars_scale_to_the_tallest_stack() {
        let svg = chart(vec![vec![2.0, 5.0], vec![3.0, 0.0]]).render().into_string();
        // Peak 5 → axis to 5: a 5 fills the plot's 206 px, stacks add up.
        let b = bars(&svg);
        assert_eq!(b.len(), 3, "no bar for a zero");
        let plot = HEIGHT - TOP - BOTTOM;
        assert!((b[0].1 - plot * 2.0 / 5.0).abs() < 0.1);
        assert!((b[1].1 - plot * 3.0 / 5.0).abs() < 0.1);
        assert!((b[1].0 + b[1].1 - b[0].0).abs() < 0.15, "the second series sits on the first");
        assert!((b[2].1 - plot).abs() < 0.1 && (b[2].0 - TOP).abs() < 0.1);
        assert!(svg.contains("<title id=\"c-title\">Credits per day</title>"));
        assert!(svg.contains("10 credits over 2 columns: s0 7, s1 3."));
        assert!(svg.contains("<title>d0: s1 3 credits</title>"));
    }

    #[test]
    fn zero_data_draws_axes_and_says_so() {
        let svg = chart(vec![vec![0.0; 30], vec![0.0; 30]]).render().into_string();
        assert!(bars(&svg).is_empty());
        assert!(svg.contains("No credits in this period."));
        assert!(svg.contains("data-categories=\"30\""));
        // The axis still reads 0 to 1, and every 7th day plus the last is labelled.
        assert!(svg.contains(">1</text>"));
        assert_eq!(svg.matches("text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">d").count(), 6);
        let empty = chart(vec![]).render().into_string();
        assert!(bars(&empty).is_empty() && empty.contains("No credits"));
    }

    #[test]
    fn one_day_is_one_centred_bar_of_full_height() {
        let svg = chart(vec![vec![5.0]]).render().into_string();
        let b = bars(&svg);
        assert_eq!(b.len(), 1);
        assert!((b[0].1 - (HEIGHT - TOP - BOTTOM)).abs() < 0.1);
        assert!(svg.contains("over 1 column:"));
        // At most BAR_MAX wide, in the middle of the plot.
        let centre = LEFT + (WIDTH - LEFT - RIGHT) / 2.0 - BAR_MAX / 2.0;
        assert!(svg.contains(&format!("x=\"{}\" y=\"{}\" width=\"60.0\"", px(centre), px(TOP))), "{svg}");
    }

    #[test]
    fn huge_values_stay_finite_and_short() {
        let svg = chart(vec![vec![3.0e12, 1.0, f64::INFINITY, -5.0]]).render().into_string();
        let b = bars(&svg);
        assert_eq!(b.len(), 2, "infinite and negative values are not drawn");
        assert!(b.iter().all(|(y, h)| y.is_finite() && h.is_finite() && *h >= 0.5));
        assert!(svg.contains(">5G</text>") || svg.contains(">5000G</text>"));
        assert_eq!(short(12_500.0), "12.5k");
        assert_eq!(short(3_200_000.0), "3.2M");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(12.0), "12");
    }

    #[test]
    fn labels_are_escaped() {
        let mut c = chart(vec![vec![1.0]]);
        c.categories = vec!["<x>".into()];
        let svg = c.render().into_string();
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
    }
}
