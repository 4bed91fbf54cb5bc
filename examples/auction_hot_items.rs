//! 3. Auction hot items: the Nexmark "hot items" query (Q5).
//!
//! Bids arrive for auctions; every 2 seconds we want the auction with the most bids in the last
//! 10 seconds. A hop window counts bids per auction per window on the engine; the highest count
//! per window is then picked from the rows. The answer is checked against a direct count.
//!
//! `cargo run --release --example auction_hot_items`

use anyhow::{Result, ensure};
use fenestra::generator::Rng;
use fenestra::{BackendChoice, Duration, Pipeline, WindowSpec};
use std::collections::BTreeMap;

pub fn run() -> Result<()> {
    let mut rng = Rng::new(5);
    // 200k bids over ~100 s on 1,000 auctions; every 20 s a different auction goes viral.
    let n = 200_000;
    let mut ts = Vec::with_capacity(n);
    let mut auction = Vec::with_capacity(n);
    let mut price = Vec::with_capacity(n);
    for i in 0..n {
        let t = 1_000_000 + (i as i64) / 2 - rng.below(300) as i64;
        let hot = 100 + (t / 20_000) % 7;
        let a = if rng.next_f64() < 0.03 {
            hot
        } else {
            rng.below(1000) as i64
        };
        ts.push(t);
        auction.push(a);
        price.push(10.0 + rng.next_f64() * 90.0);
    }

    let (size, slide) = (10_000i64, 2_000i64);
    let mut p = Pipeline::builder()
        .window(WindowSpec::sliding(
            Duration::from_millis(size),
            Duration::from_millis(slide),
        ))
        .watermark_delay(Duration::from_millis(300))
        .value_columns(["price"])
        .aggregates("count,max".parse()?)
        .backend(BackendChoice::Auto)
        .build()?;
    println!("{}", p.backend_reason());
    p.push_int_keys(&ts, &auction, &[&price])?;
    let out = p.finish()?;
    ensure!(out.late.is_empty(), "no bid is late");

    // Hot item per window: the highest bid count (ties: the smallest auction id, rows come in
    // key order within a window).
    let rows = &out.rows;
    let mut hot: BTreeMap<i64, (i64, u64)> = BTreeMap::new();
    for i in 0..rows.len() {
        let a = p.keys().int_value(rows.key[i]).unwrap_or(-1);
        let e = hot.entry(rows.start[i]).or_insert((a, 0));
        if rows.count[i] > e.1 {
            *e = (a, rows.count[i]);
        }
    }

    // Check against a direct count of every window.
    let mut direct: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for (t, a) in ts.iter().zip(&auction) {
        let last = t - t.rem_euclid(slide);
        let mut s = last;
        while s > t - size {
            *direct.entry((s, *a)).or_default() += 1;
            s -= slide;
        }
    }
    let mut expect: BTreeMap<i64, (i64, u64)> = BTreeMap::new();
    for ((s, a), c) in direct {
        let e = expect.entry(s).or_insert((a, 0));
        if c > e.1 {
            *e = (a, c);
        }
    }
    ensure!(hot == expect, "hot items differ from a direct count");
    for (s, (a, c)) in hot.iter().step_by(5).take(8) {
        println!(
            "window [{:>7} s, +10 s): auction {a} with {c} bids",
            (s - 1_000_000) / 1000
        );
    }
    println!("{} windows, hot items match a direct count", hot.len());
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<()> {
    run()
}
