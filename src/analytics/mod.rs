//! Engagement analytics (contract §7): per campaign, variant and hour — delivered,
//! impressions, clicks (and per button), dismissals, conversions, control exposures and
//! control conversions, with unique users for each — and the stats query with rates and
//! lift against control. Counting happens inside the user's engine step (one upsert per
//! fact, committed with the fact itself by the store's group commit), so the numbers are
//! exact and survive a crash; queries read the store.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::clock::{rfc3339, Millis};
use crate::store::WriteOp;

/// One hour in ms.
pub const HOUR_MS: Millis = 3_600_000;

/// Counted facts (the `metric` column).
pub mod metric {
    /// A delivery was made (sent or pending).
    pub const DELIVERED: &str = "delivered";
    /// First impression of a delivery.
    pub const IMPRESSION: &str = "impression";
    /// A click (first per delivery and button); per button as `click:<id>` too.
    pub const CLICK: &str = "click";
    /// A dismissal (first per delivery).
    pub const DISMISS: &str = "dismiss";
    /// A conversion after an impression (once per delivery).
    pub const CONVERT: &str = "convert";
    /// A control exposure.
    pub const CONTROL: &str = "control";
    /// A conversion after a control exposure (once per exposure).
    pub const CONTROL_CONVERT: &str = "control_convert";
}

/// The write that counts one fact for `user` at `now`.
pub fn count(campaign: &str, variant: &str, metric: &str, user: &str, now: Millis) -> WriteOp {
    WriteOp::Stat {
        campaign: campaign.to_string(),
        variant: variant.to_string(),
        hour: now.div_euclid(HOUR_MS),
        metric: metric.to_string(),
        user: user.to_string(),
    }
}

/// Stored counts for a campaign over a range of hours: `(variant, hour, metric, n)`.
pub type Rows = Vec<(String, i64, String, u64)>;
/// Unique users per `(variant, metric)` over the range.
pub type Uniques = Vec<(String, String, u64)>;

/// Bucket size for the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Hourly buckets.
    Hour,
    /// Daily (UTC) buckets.
    Day,
}

impl Interval {
    /// Parses `hour` / `day`.
    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "hour" => Some(Interval::Hour),
            "day" => Some(Interval::Day),
            _ => None,
        }
    }

    fn bucket(self, hour: i64) -> i64 {
        match self {
            Interval::Hour => hour,
            Interval::Day => hour.div_euclid(24) * 24,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }
}

fn rate(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Relative lift of `p_v = cv/nv` over `p_c = cc/nc` and its 95% interval (delta method
/// on the log of the ratio; undefined when either side has no conversions).
pub fn lift(cv: u64, nv: u64, cc: u64, nc: u64) -> (Option<f64>, Option<[f64; 2]>) {
    if nv == 0 || nc == 0 || cc == 0 {
        return (None, None);
    }
    let pv = cv as f64 / nv as f64;
    let pc = cc as f64 / nc as f64;
    let l = pv / pc - 1.0;
    if cv == 0 {
        return (Some(l), None);
    }
    let se = ((1.0 - pv) / (cv as f64) + (1.0 - pc) / (cc as f64)).sqrt();
    let log_ratio = (pv / pc).ln();
    let ci = [
        (log_ratio - 1.96 * se).exp() - 1.0,
        (log_ratio + 1.96 * se).exp() - 1.0,
    ];
    (Some(l), Some(ci))
}

/// What the store holds of a campaign over the queried hours.
pub struct Counted {
    /// Counts per `(variant, hour, metric)`.
    pub rows: Rows,
    /// Unique users per `(variant, metric)` over the whole range.
    pub uniques: Uniques,
    /// Unique users per `(variant, bucket's first hour, metric)` for conversions and
    /// control conversions (see [`CONVERTED`]).
    pub converted: Rows,
}

/// The metrics counted in users rather than occurrences (contract §7: conversions are
/// "users with an impression who did the goal event within the goal window after it").
pub const CONVERTED: [&str; 2] = [metric::CONVERT, metric::CONTROL_CONVERT];

/// Builds the stats answer. `variants` are the campaign's `(id, control)`: a variant
/// with nothing counted yet is listed with zeros.
pub fn summarize(
    campaign: &str,
    from: Millis,
    to: Millis,
    interval: Interval,
    variants: &[(String, bool)],
    counted: &Counted,
) -> Value {
    let Counted {
        rows,
        uniques,
        converted,
    } = counted;
    let control_variants: Vec<&String> = variants
        .iter()
        .filter(|(_, control)| *control)
        .map(|(id, _)| id)
        .collect();
    let mut per_variant: BTreeMap<String, HashMap<String, u64>> = variants
        .iter()
        .map(|(id, _)| (id.clone(), HashMap::new()))
        .collect();
    let mut series: BTreeMap<(i64, String), HashMap<&str, u64>> = BTreeMap::new();
    for (variant, hour, metric, n) in rows {
        *per_variant
            .entry(variant.clone())
            .or_default()
            .entry(metric.clone())
            .or_default() += n;
        let key = match metric.as_str() {
            metric::DELIVERED => "delivered",
            metric::IMPRESSION => "impressions",
            metric::CLICK => "clicks",
            metric::DISMISS => "dismissals",
            metric::CONTROL => "control_exposures",
            // Users per bucket, from `converted` below.
            _ => continue,
        };
        *series
            .entry((interval.bucket(*hour), variant.clone()))
            .or_default()
            .entry(key)
            .or_default() += n;
    }
    for (variant, hour, metric, n) in converted {
        let key = match metric.as_str() {
            metric::CONVERT => "conversions",
            metric::CONTROL_CONVERT => "control_conversions",
            _ => continue,
        };
        *series
            .entry((interval.bucket(*hour), variant.clone()))
            .or_default()
            .entry(key)
            .or_default() += n;
    }
    let uniq = |variant: &str, m: &str| {
        uniques
            .iter()
            .find(|(v, mm, _)| v == variant && mm == m)
            .map(|u| u.2)
            .unwrap_or(0)
    };
    // Control: every control variant together.
    let mut control = (0u64, 0u64, 0u64, 0u64);
    for v in &control_variants {
        let m = per_variant.get(v.as_str());
        let get = |k: &str| m.and_then(|m| m.get(k)).copied().unwrap_or(0);
        control.0 += get(metric::CONTROL);
        // Control conversions are users, like conversions.
        control.1 += uniq(v, metric::CONTROL_CONVERT);
        control.2 += uniq(v, metric::CONTROL);
        control.3 += uniq(v, metric::CONTROL_CONVERT);
    }
    let mut variants = Vec::new();
    for (v, m) in &per_variant {
        if control_variants.contains(&v) {
            continue;
        }
        let get = |k: &str| m.get(k).copied().unwrap_or(0);
        // Conversions are users (contract §7), not converted deliveries.
        let (imp, conv) = (get(metric::IMPRESSION), uniq(v, metric::CONVERT));
        let by_button: Map<String, Value> = m
            .iter()
            .filter_map(|(k, n)| k.strip_prefix("click:").map(|b| (b.to_string(), json!(n))))
            .collect();
        let (l, ci) = lift(conv, imp, control.1, control.0);
        variants.push(json!({
            "variant": v, "control": false,
            "delivered": get(metric::DELIVERED), "impressions": imp, "clicks": get(metric::CLICK),
            "clicks_by_button": by_button, "dismissals": get(metric::DISMISS), "conversions": conv,
            "unique_users": {
                "delivered": uniq(v, metric::DELIVERED), "impressions": uniq(v, metric::IMPRESSION),
                "clicks": uniq(v, metric::CLICK), "dismissals": uniq(v, metric::DISMISS), "conversions": uniq(v, metric::CONVERT),
            },
            "click_through_rate": rate(get(metric::CLICK), imp),
            "dismissal_rate": rate(get(metric::DISMISS), imp),
            "conversion_rate": rate(conv, imp),
            "lift": l, "lift_ci95": ci,
        }));
    }
    let series: Vec<Value> = series
        .into_iter()
        .map(|((bucket, variant), m)| {
            let g = |k: &str| m.get(k).copied().unwrap_or(0);
            json!({"start": rfc3339(bucket * HOUR_MS), "variant": variant,
                   "delivered": g("delivered"), "impressions": g("impressions"), "clicks": g("clicks"),
                   "dismissals": g("dismissals"), "conversions": g("conversions"),
                   "control_exposures": g("control_exposures"), "control_conversions": g("control_conversions")})
        })
        .collect();
    json!({
        "campaign": campaign, "from": rfc3339(from), "to": rfc3339(to), "interval": interval.name(),
        "variants": variants,
        "control": {"exposures": control.0, "conversions": control.1,
                    "unique_users": {"exposures": control.2, "conversions": control.3},
                    "conversion_rate": rate(control.1, control.0)},
        "series": series,
    })
}

fn csv_num(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The stats answer as CSV: one `total` row per variant (and control), then one row per
/// interval and variant.
pub fn to_csv(stats: &Value) -> String {
    let mut out = String::from("scope,start,variant,delivered,impressions,clicks,dismissals,conversions,control_exposures,control_conversions,click_through_rate,dismissal_rate,conversion_rate,lift,lift_ci95_low,lift_ci95_high\n");
    let from = stats["from"].as_str().unwrap_or("");
    for v in stats["variants"].as_array().into_iter().flatten() {
        let ci = &v["lift_ci95"];
        out.push_str(&format!(
            "total,{from},{},{},{},{},{},{},0,0,{},{},{},{},{},{}\n",
            v["variant"].as_str().unwrap_or(""),
            v["delivered"],
            v["impressions"],
            v["clicks"],
            v["dismissals"],
            v["conversions"],
            csv_num(&v["click_through_rate"]),
            csv_num(&v["dismissal_rate"]),
            csv_num(&v["conversion_rate"]),
            csv_num(&v["lift"]),
            csv_num(&ci[0]),
            csv_num(&ci[1]),
        ));
    }
    let c = &stats["control"];
    out.push_str(&format!(
        "total,{from},control,0,0,0,0,0,{},{},,,{},,,\n",
        c["exposures"],
        c["conversions"],
        csv_num(&c["conversion_rate"])
    ));
    for s in stats["series"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "interval,{},{},{},{},{},{},{},{},{},,,,,,\n",
            s["start"].as_str().unwrap_or(""),
            s["variant"].as_str().unwrap_or(""),
            s["delivered"],
            s["impressions"],
            s["clicks"],
            s["dismissals"],
            s["conversions"],
            s["control_exposures"],
            s["control_conversions"],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lift_and_interval() {
        // 20% vs 10% conversion: lift +100%, interval around it and above 0.
        let (l, ci) = lift(200, 1000, 100, 1000);
        assert!((l.unwrap() - 1.0).abs() < 1e-9);
        let [lo, hi] = ci.unwrap();
        assert!(lo > 0.5 && lo < 1.0 && hi > 1.0 && hi < 1.7, "{lo} {hi}");
        assert_eq!(
            lift(5, 10, 0, 10),
            (None, None),
            "no control conversions: undefined"
        );
    }

    #[test]
    fn summary_rates_series_and_csv() {
        let rows: Rows = vec![
            ("a".into(), 10, metric::DELIVERED.into(), 4),
            ("a".into(), 10, metric::IMPRESSION.into(), 4),
            ("a".into(), 11, metric::CLICK.into(), 2),
            ("a".into(), 11, "click:go".into(), 2),
            ("a".into(), 35, metric::DISMISS.into(), 1),
            // Three converted deliveries of two users.
            ("a".into(), 35, metric::CONVERT.into(), 3),
            ("ctl".into(), 10, metric::CONTROL.into(), 4),
            ("ctl".into(), 12, metric::CONTROL_CONVERT.into(), 1),
        ];
        let uniques: Uniques = vec![
            ("a".into(), metric::IMPRESSION.into(), 3),
            ("a".into(), metric::CONVERT.into(), 2),
            ("ctl".into(), metric::CONTROL_CONVERT.into(), 1),
        ];
        let converted: Rows = vec![
            ("a".into(), 24, metric::CONVERT.into(), 2),
            ("ctl".into(), 0, metric::CONTROL_CONVERT.into(), 1),
        ];
        let variants = [
            ("a".to_string(), false),
            ("b".to_string(), false),
            ("ctl".to_string(), true),
        ];
        let counted = Counted {
            rows,
            uniques,
            converted,
        };
        let s = summarize("c", 0, 100 * HOUR_MS, Interval::Day, &variants, &counted);
        let a = &s["variants"][0];
        assert_eq!(
            (a["impressions"].as_u64(), a["clicks"].as_u64()),
            (Some(4), Some(2))
        );
        assert_eq!(a["click_through_rate"], 0.5);
        assert_eq!(a["conversion_rate"], 0.5);
        assert_eq!(a["clicks_by_button"]["go"], 2);
        assert_eq!(a["unique_users"]["impressions"], 3);
        assert_eq!(a["conversions"], 2, "users, not converted deliveries");
        assert_eq!(a["lift"], 1.0, "0.5 vs 0.25");
        // A variant with nothing counted is listed, with zeros and no rates.
        let b = &s["variants"][1];
        assert_eq!(
            (b["variant"].as_str(), b["delivered"].as_u64()),
            (Some("b"), Some(0))
        );
        assert!(b["conversion_rate"].is_null());
        assert_eq!(s["variants"].as_array().unwrap().len(), 2);
        let day1 = s["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["variant"] == "a" && r["start"] == "1970-01-02T00:00:00.000Z")
            .unwrap();
        assert_eq!(day1["conversions"], 2);
        assert_eq!(s["control"]["exposures"], 4);
        assert_eq!(
            s["series"].as_array().unwrap().len(),
            3,
            "day 0 (a, ctl) and day 1 (a)"
        );
        let csv = to_csv(&s);
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("total,1970-01-01T00:00:00.000Z,a,4,4,2,1,2,"));
        assert_eq!(
            csv.lines().count(),
            1 + 3 + 3,
            "header, a, b, control, 3 series rows"
        );
    }
}
