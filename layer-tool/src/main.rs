fn main() {
    eprintln!("layer-tool: not built yet");
    std::process::exit(2);
}
