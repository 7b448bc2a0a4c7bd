//! `submitter auth generate`: NATS users for the registry, as an operator would run them.
//!
//! Users authenticate with NKeys: the server's config holds only public keys (so the
//! generated `auth.conf` can live in git beside `tenants.toml`), and each user's seed is
//! written once, to its own file readable only by its owner, and never printed. Running it
//! again after adding a tenant keeps every existing seed (nobody's credentials change) and
//! adds the new user; the permissions come from `llmq_runtime::auth`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use llmq_runtime::auth::{Role, User, server_config};
use llmq_schemas::{Subjects, Tenant};
use llmq_submitter::ClientOptions;
use nkeys::KeyPair;

use super::print::{note, out};
use super::table::{Align, Table};
use super::{CliError, Exit};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Write `auth.conf` (nats-server authorization, public keys only) and one NKey seed
    /// file per user (admin, worker, edge, one per tenant) into a directory.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The registry file (TOML, `[tenants.<id>]` tables).
    pub file: PathBuf,
    /// Where to write `auth.conf` and the seed files (created if missing; existing seeds
    /// are kept).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(command: AuthCommand, options: &ClientOptions) -> Result<Exit, CliError> {
    let AuthCommand::Generate(args) = command;
    let subjects = Subjects::new(&options.prefix)
        .map_err(|err| CliError::Usage(format!("--prefix: {err}")))?;
    let roles = roles(&super::tenants::read_file(&args.file)?)?;
    std::fs::create_dir_all(&args.out).map_err(|source| CliError::Io {
        what: "creating the output directory",
        source,
    })?;
    let mut table = Table::new(&[
        ("user", Align::Left),
        ("seed file", Align::Left),
        ("seed", Align::Left),
        ("public key", Align::Left),
    ]);
    let mut users = Vec::with_capacity(roles.len());
    for role in roles {
        let path = args.out.join(format!("{}.nk", role.name()));
        let (pair, created) = seed(&path)?;
        table.row(vec![
            role.name(),
            path.display().to_string(),
            if created { "new" } else { "kept" }.into(),
            pair.public_key(),
        ]);
        users.push(User {
            role,
            nkey: pair.public_key(),
        });
    }
    let config_path = args.out.join("auth.conf");
    std::fs::write(&config_path, server_config(&subjects, &users)).map_err(|source| {
        CliError::Io {
            what: "writing auth.conf",
            source,
        }
    })?;
    out(&table.render())?;
    note(format!(
        "wrote {} ({} users); copy it beside nats-server's config, add `include \"auth.conf\"` \
         (includes are relative to the config's directory) and reload the server.\n\
         Each seed file is a user's secret: hand it to that user only (--nkey-file, or \
         [nats] nkey_file in a worker's config).",
        config_path.display(),
        users.len(),
    ));
    Ok(Exit::Success)
}

/// Admin, worker, edge, then every tenant of the registry.
fn roles(entries: &[llmq_schemas::TenantEntry]) -> Result<Vec<Role>, CliError> {
    let mut roles = vec![Role::Admin, Role::Worker, Role::Edge];
    for entry in entries {
        let tenant = Tenant::parse(&entry.id)
            .map_err(|err| CliError::Usage(format!("tenant {:?}: {err}", entry.id)))?;
        roles.push(Role::Tenant {
            tenant,
            reply_prefixes: entry.reply_prefixes.clone(),
        });
    }
    Ok(roles)
}

/// The user's key pair from its seed file, or a new one written to a new file (owner-only).
fn seed(path: &Path) -> Result<(KeyPair, bool), CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let pair = KeyPair::from_seed(text.trim()).map_err(|err| {
                CliError::Usage(format!("{} is not an NKey seed: {err}", path.display()))
            })?;
            Ok((pair, false))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let pair = KeyPair::new_user();
            let seed = pair
                .seed()
                .map_err(|err| CliError::Usage(format!("generating an NKey: {err}")))?;
            write_secret(path, &seed).map_err(|source| CliError::Io {
                what: "writing a seed file",
                source,
            })?;
            Ok((pair, true))
        }
        Err(source) => Err(CliError::Io {
            what: "reading a seed file",
            source,
        }),
    }
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")
}
