//! Prints, for each input file, whether the target passes it or the first
//! line of the invariant it breaks (for the frame targets, the output frame
//! from `->` on): groups an AFL run's crashes by cause without AFL.
//!
//!     cargo run -p svcgate-fuzz --example triage -- TARGET FILE...

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next() else {
        eprintln!("usage: triage TARGET FILE...");
        std::process::exit(2);
    };
    svcgate_fuzz::init();
    std::panic::set_hook(Box::new(|_| {}));
    for f in args {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let msg = match std::panic::catch_unwind(|| svcgate_fuzz::targets::run(&target, &data)) {
            Ok(true) => "ok".to_owned(),
            Ok(false) => format!("unknown target {target}"),
            Err(e) => e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default(),
        };
        let shown: String = match msg.find("->") {
            Some(i) => msg[i..].chars().take(150).collect(),
            None => msg.lines().next().unwrap_or("").chars().take(150).collect(),
        };
        println!("{f} ({} bytes): {shown}", data.len());
    }
}
