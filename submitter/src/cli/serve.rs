//! `submitter serve`: moved to its own binary, `llmq-edge` (crate `llmq-edge`). The
//! producer library cannot hold the HTTP edge (a producer would compile an HTTP server),
//! and this binary cannot start it (the edge depends on this crate). The command stays,
//! hidden, to tell a script that still runs it what to run instead.

use clap::Args;

use super::{CliError, Exit};

/// Everything after `serve`, as given.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

pub fn run(args: &ServeArgs) -> Result<Exit, CliError> {
    let flags = args.rest.join(" ");
    Err(CliError::Usage(format!(
        "`submitter serve` is now its own binary: run `llmq-edge {flags}` (the same flags: \
         --listen, --max-body-bytes, --default-timeout, --read-timeout, --keep-alive; the \
         connection from LLMQ__NATS__URL, ... or [nats] in llmq-edge --config FILE)"
    )))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn serve_names_llmq_edge_with_the_flags_given_and_is_a_usage_error() {
        let cli = Cli::try_parse_from(["submitter", "serve", "--listen", "0.0.0.0:8080"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let err = run(&args).unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
        let text = err.to_string();
        assert!(text.contains("llmq-edge --listen 0.0.0.0:8080"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
}
