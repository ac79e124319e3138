//! The svcgate binary.

fn main() {
    eprintln!("svcgate: the control plane is not built yet");
    std::process::exit(2);
}
