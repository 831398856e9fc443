//! The edge parsers' property tests (`tests/it/props.rs`) at scale: by default 125 000 generated
//! inputs per property, a million and more in all (CI runs 1 000 each). Prints each property's
//! cases and rate.
//!
//! ```sh
//! cargo bench --bench props                      # 125 000 per property
//! APIKEYS_PROPTEST_CASES=1000000 cargo bench --bench props
//! ```

#[path = "../tests/it/props.rs"]
#[allow(dead_code)]
mod props;

fn main() {
    let cases = std::env::var("APIKEYS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(125_000);
    let started = std::time::Instant::now();
    let mut total = 0u64;
    println!("{:<70} {:>10} {:>10} {:>12}", "property", "cases", "seconds", "cases/s");
    for (name, cases, elapsed) in props::run_all(cases) {
        total += u64::from(cases);
        let rate = f64::from(cases) / elapsed.as_secs_f64();
        println!("{name:<70} {cases:>10} {:>10.1} {rate:>12.0}", elapsed.as_secs_f64());
    }
    println!("all properties held: {total} generated cases in {:.1} s, 0 failures", started.elapsed().as_secs_f64());
}
