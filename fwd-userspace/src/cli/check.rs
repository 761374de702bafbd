//! `fwd check`: compile the policies and summarise them.

use std::process::ExitCode;

use super::args::{CompiledPolicy, PolicyArgs};
use crate::compile::{DatedRule, tables::SlotTables};

pub(crate) fn check(args: &PolicyArgs) -> anyhow::Result<ExitCode> {
    let CompiledPolicy {
        set,
        compiled,
        origin,
        ..
    } = args.compile()?;
    let image = &compiled.image;
    println!("policies: {origin}");
    println!(
        "{:<24} {:>6} {:>9} {:>8} {:>8}",
        "vendor", "rules", "compiled", "pending", "expired"
    );
    let of_vendor = |dated: &[DatedRule], id: &str| {
        dated
            .iter()
            .filter(|d| d.rule.split_once('/').is_some_and(|(v, _)| v == id))
            .count()
    };
    for v in &set.vendors {
        let enforced = image
            .rules
            .iter()
            .filter(|r| r.vendor == v.vendor.id)
            .count();
        println!(
            "{:<24} {:>6} {:>9} {:>8} {:>8}",
            v.vendor.id,
            v.rules.len(),
            enforced,
            of_vendor(&compiled.pending, &v.vendor.id),
            of_vendor(&compiled.expired, &v.vendor.id)
        );
    }
    let tables = SlotTables::build(image, &[]).sizes();
    println!(
        "compiled: {} rules in {} classes; prefixes: {} IPv4, {} IPv6; kernel tables: {} IPv4 ranges, {} IPv6 ranges, {} port ranges",
        image.rules.len(),
        image.classes,
        image.dst4.len(),
        image.dst6.len(),
        tables.ranges4,
        tables.ranges6,
        tables.port_ranges
    );
    if compiled.unselected > 0 {
        println!("not selected by the config: {} rules", compiled.unselected);
    }
    println!(
        "dated: {} pending (enforced from a later day), {} expired (kept for the record, not enforced)",
        compiled.pending.len(),
        compiled.expired.len()
    );
    for p in &compiled.pending {
        println!(
            "pending: {}: rule `{}` is enforced from {}",
            p.location, p.rule, p.date
        );
    }
    for e in &compiled.expired {
        println!(
            "expired: {}: rule `{}` ended {}",
            e.location, e.rule, e.date
        );
    }
    for w in &compiled.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
