//! Profiles: named servers and keys in `~/.config/corral/config.toml`
//! (`$XDG_CONFIG_HOME/corral/config.toml` when that is set), so a key need not be typed,
//! exported or passed on the command line:
//!
//! ```toml
//! default = "prod"
//!
//! [profiles.prod]
//! url = "https://corral.example.com"
//! key = "crl_…"
//! ```
//!
//! The client commands take what `--url`/`--key` (or `CORRAL_URL`/`CORRAL_KEY`) do not
//! give from the profile named by `--profile` (or `CORRAL_PROFILE`), else from the
//! `default` one ([`super::client::ServerArgs`]).
//!
//! `corral profile set` writes the file, and only it: the key is read from a file or
//! stdin, never from the command line, and the file is created with mode 0600 (its
//! directory 0700) and replaced atomically, so it is never readable by others, not
//! even for a moment. Reading a file that others may read prints a warning.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::client::{Exit, fail};
use super::output::{errln, outln};
use super::table::Table;

/// One profile: a server and a key for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The server's base URL.
    pub url: String,
    /// The API key.
    pub key: String,
}

/// The profile file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The profile used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the profile file is: `$XDG_CONFIG_HOME/corral/config.toml`, else
/// `$HOME/.config/corral/config.toml`.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })
        .context("neither XDG_CONFIG_HOME nor HOME is set: cannot find the profile file")?;
    Ok(base.join("corral").join("config.toml"))
}

impl Profiles {
    /// Reads the profile file; a missing file has no profiles.
    pub fn load() -> anyhow::Result<Profiles> {
        let path = path()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Profiles::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            errln!(
                "warning: {} holds API keys and others may read it: chmod 600 it",
                path.display()
            );
        }
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid profile file", path.display()))
    }

    /// The profile named `name`, or else the default one (none if there is no
    /// default). A name that is not in the file is an error.
    pub fn pick(mut self, name: Option<&str>) -> anyhow::Result<Option<Profile>> {
        let Some(name) = name.map(str::to_string).or(self.default.clone()) else {
            return Ok(None);
        };
        match self.profiles.remove(&name) {
            Some(profile) => Ok(Some(profile)),
            None => anyhow::bail!(
                "no profile {name:?} in {}: add it with `corral profile set {name} --url URL`",
                path()?.display()
            ),
        }
    }

    /// Writes the profile file: a new file of mode 0600 renamed over the old one.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path()?;
        let dir = path.parent().expect("the path has a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let text = toml::to_string(self).context("writing the profiles as TOML")?;
        let temporary = dir.join(format!(".config.toml.{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        Ok(path)
    }
}

/// `corral profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Add or replace a profile: the server's URL, and an API key read from --key-file
    /// or stdin (never from the command line). The first profile becomes the default.
    Set {
        /// The profile's name.
        name: String,
        /// The server's base URL.
        #[arg(long)]
        url: String,
        /// Read the API key from this file [default: stdin].
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Make it the default profile.
        #[arg(long)]
        default: bool,
    },
    /// List the profiles (names, URLs and the start of each key).
    List,
    /// Make a profile the default.
    Use {
        /// The profile's name.
        name: String,
    },
    /// Remove a profile.
    Delete {
        /// The profile's name.
        name: String,
    },
}

/// Runs `corral profile …`. Exit status: 0 done; 1 no such profile; 2 bad usage, or the
/// file could not be read or written. The error is only the output's.
pub fn profile(args: ProfileArgs) -> io::Result<ExitCode> {
    match run(args.command) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(Failure::Output(e)) => Err(e),
        Err(Failure::Missing(name)) => {
            errln!("error: no profile {name:?}");
            Ok(Exit::Refused.into())
        }
        Err(Failure::Other(e)) => Ok(fail(&e)),
    }
}

enum Failure {
    Output(io::Error),
    Missing(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn run(command: ProfileCommand) -> Result<(), Failure> {
    let mut profiles = Profiles::load()?;
    match command {
        ProfileCommand::Set {
            name,
            url,
            key_file,
            default,
        } => {
            reqwest::Url::parse(&url)
                .map_err(|e| anyhow::anyhow!("--url {url:?} is not a URL: {e}"))?;
            let key = read_key(key_file.as_ref())?;
            profiles.profiles.insert(name.clone(), Profile { url, key });
            if default || profiles.default.is_none() {
                profiles.default = Some(name.clone());
            }
            let path = profiles.save()?;
            errln!("saved profile {name:?} in {}", path.display());
        }
        ProfileCommand::List => {
            let mut table = Table::new(&["NAME", "URL", "KEY", "DEFAULT"]);
            for (name, profile) in &profiles.profiles {
                let start: String = profile.key.chars().take(8).collect();
                table.push(vec![
                    name.clone(),
                    profile.url.clone(),
                    format!("{start}…"),
                    if profiles.default.as_ref() == Some(name) {
                        "*".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            table.print("no profiles").map_err(Failure::Output)?;
        }
        ProfileCommand::Use { name } => {
            if !profiles.profiles.contains_key(&name) {
                return Err(Failure::Missing(name));
            }
            profiles.default = Some(name.clone());
            profiles.save()?;
            outln!("default profile: {name}").map_err(Failure::Output)?;
        }
        ProfileCommand::Delete { name } => {
            if profiles.profiles.remove(&name).is_none() {
                return Err(Failure::Missing(name));
            }
            if profiles.default.as_ref() == Some(&name) {
                profiles.default = None;
            }
            profiles.save()?;
            errln!("deleted profile {name:?}");
        }
    }
    Ok(())
}

/// The API key from `file`, or from stdin: its first line, trimmed.
fn read_key(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the key from {}", path.display()))?,
        None => {
            if io::stdin().is_terminal() {
                errln!("paste the API key, then press Enter:");
                let mut line = String::new();
                io::stdin().read_line(&mut line).context("reading stdin")?;
                line
            } else {
                io::read_to_string(io::stdin()).context("reading the key from stdin")?
            }
        }
    };
    let key = text.lines().next().unwrap_or_default().trim().to_string();
    if key.is_empty() {
        anyhow::bail!("the API key is empty");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_file_round_trips_through_toml() {
        let text = r#"
default = "prod"

[profiles.prod]
url = "https://corral.example.com"
key = "crl_abc"

[profiles.local]
url = "http://127.0.0.1:8080"
key = "crl_def"
"#;
        let profiles: Profiles = toml::from_str(text).unwrap();
        assert_eq!(profiles.default.as_deref(), Some("prod"));
        assert_eq!(profiles.profiles["local"].key, "crl_def");
        let again: Profiles = toml::from_str(&toml::to_string(&profiles).unwrap()).unwrap();
        assert_eq!(again, profiles);
    }

    #[test]
    fn picking_takes_the_named_profile_else_the_default() {
        let profiles: Profiles = toml::from_str(
            "default = \"a\"\n[profiles.a]\nurl = \"http://a\"\nkey = \"ka\"\n[profiles.b]\nurl = \"http://b\"\nkey = \"kb\"\n",
        )
        .unwrap();
        assert_eq!(profiles.clone().pick(None).unwrap().unwrap().key, "ka");
        assert_eq!(profiles.clone().pick(Some("b")).unwrap().unwrap().key, "kb");
        assert!(profiles.pick(Some("c")).is_err());
        assert_eq!(Profiles::default().pick(None).unwrap(), None);
    }

    #[test]
    fn an_unknown_field_is_refused() {
        assert!(
            toml::from_str::<Profiles>("[profiles.a]\nurl = \"u\"\nkey = \"k\"\nuser = \"x\"\n")
                .is_err()
        );
    }
}
