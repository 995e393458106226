#![forbid(unsafe_code)]

fn main() {
    if let Err(err) = layer_tool::cli::main() {
        eprintln!("layer-tool: {err:#}");
        std::process::exit(1);
    }
}
