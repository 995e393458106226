#![forbid(unsafe_code)]

fn main() {
    // Warnings (a store tightened, ...) on stderr; LAYER_TOOL_LOG=info|debug for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAYER_TOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    // The inner process of a run without root makes its user namespace before anything else.
    layer_tool::userns::child_setup();
    if let Err(err) = layer_tool::cli::main() {
        eprintln!("layer-tool: {err:#}");
        std::process::exit(1);
    }
}
