fn main() {
    std::process::exit(banger::cli::run());
}
