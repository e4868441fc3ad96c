//! The command line (contract §9): `beckon serve` and `beckon token`. Flags have
//! environment twins; a TOML file (`--config`) may set everything; flags and env win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::{Config, DEV_ADMIN_TOKEN, DEV_JWT_SECRET, DEV_WRITE_KEY};

/// Beckon: a self-hosted, real-time in-app messaging gateway.
///
/// Browser and mobile clients hold one WebSocket session each; events go up, in-app
/// messages come down. Start a local node with `beckon serve --dev`.
#[derive(Parser, Debug)]
#[command(
    name = "beckon",
    version,
    about,
    long_about,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (HTTP API, WebSocket and dashboard on one port).
    Serve(ServeArgs),
    /// Print a user token signed with the configured secret.
    Token(TokenArgs),
}

/// `beckon serve` flags.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address for HTTP, WebSocket and dashboard [default: 127.0.0.1:8080]
    #[arg(long, env = "BECKON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder of the embedded store [default: ./beckon-data]
    #[arg(long, env = "BECKON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Redis URL: set = cluster mode
    #[arg(long, env = "BECKON_REDIS_URL")]
    redis_url: Option<String>,
    /// HS256 secret for user tokens (required unless --dev)
    #[arg(long, env = "BECKON_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Bearer token for admin calls (required unless --dev)
    #[arg(long, env = "BECKON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// TOML config file with every setting (see docs/configuration.md)
    #[arg(long, env = "BECKON_CONFIG")]
    config: Option<PathBuf>,
    /// Segment-compatible write key (repeatable)
    #[arg(
        long = "write-key",
        env = "BECKON_WRITE_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    write_keys: Vec<String>,
    /// Attributes clients may set with `identify` (comma-separated)
    #[arg(long, env = "BECKON_CLIENT_WRITABLE", value_delimiter = ',')]
    client_writable: Vec<String>,
    /// Dev mode: fixed, loudly printed dev secrets
    #[arg(long, env = "BECKON_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    dev: bool,
    /// Log format: text or json
    #[arg(long, env = "BECKON_LOG_FORMAT")]
    log_format: Option<String>,
    /// Log level / filter, e.g. info or beckon=debug (RUST_LOG overrides)
    #[arg(long, env = "BECKON_LOG")]
    log_level: Option<String>,
}

/// `beckon token` flags.
#[derive(Args, Debug)]
struct TokenArgs {
    /// User id (`sub`)
    #[arg(long)]
    user: String,
    /// Trusted attribute k=v (repeatable; values parse as JSON where they can)
    #[arg(long = "attr", value_name = "K=V")]
    attrs: Vec<String>,
    /// Lifetime, e.g. 1h, 30m, 7d
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// HS256 secret (same flag/env as serve)
    #[arg(long, env = "BECKON_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// TOML config file whose `[jwt] secret` signs, when no --jwt-secret is given
    #[arg(long, env = "BECKON_CONFIG")]
    config: Option<PathBuf>,
    /// Use the dev secret
    #[arg(long, env = "BECKON_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    dev: bool,
}

impl ServeArgs {
    /// Merges file, env and flags into a validated config.
    pub fn into_config(self) -> Result<Config, String> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.data_dir {
            cfg.data_dir = v;
        }
        if self.redis_url.is_some() {
            cfg.redis_url = self.redis_url;
        }
        if self.jwt_secret.is_some() {
            cfg.jwt.secret = self.jwt_secret;
        }
        if self.admin_token.is_some() {
            cfg.admin_token = self.admin_token;
        }
        if !self.write_keys.is_empty() {
            cfg.write_keys = self
                .write_keys
                .into_iter()
                .filter(|k| !k.is_empty())
                .collect();
        }
        if !self.client_writable.is_empty() {
            cfg.client_writable = self
                .client_writable
                .into_iter()
                .filter(|k| !k.is_empty())
                .collect();
        }
        cfg.dev |= self.dev;
        if let Some(v) = self.log_format {
            cfg.log.format = v;
        }
        if let Some(v) = self.log_level {
            cfg.log.level = v;
        }
        cfg.apply_dev_defaults();
        cfg.validate()?;
        Ok(cfg)
    }
}

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn print_dev_banner(listen: std::net::SocketAddr) {
    eprintln!(
        "\n\
         ================================================================\n\
         BECKON DEV MODE: fixed, public secrets. Never use in production.\n\
           listening:     http://{listen}  (WebSocket: ws://{listen}/v1/ws)\n\
           JWT secret:    {DEV_JWT_SECRET}\n\
           admin token:   {DEV_ADMIN_TOKEN}\n\
           write key:     {DEV_WRITE_KEY}\n\
           mint a token:  beckon token --dev --user u_1\n\
         ================================================================\n"
    );
}

/// Parses a `k=v` attribute; the value is JSON when it parses, else a string.
pub fn parse_attr(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected k=v"))?;
    if k.is_empty() {
        return Err(format!("`{s}`: empty attribute name"));
    }
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), v))
}

fn token(args: TokenArgs) -> Result<String, String> {
    let from_file = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_toml(&text)?.jwt.secret
        }
        None => None,
    };
    let secret = match (args.jwt_secret.or(from_file), args.dev) {
        (Some(s), _) => s,
        (None, true) => DEV_JWT_SECRET.to_string(),
        (None, false) => {
            return Err(
                "a secret is needed: --jwt-secret / BECKON_JWT_SECRET, `[jwt] secret` in --config, or --dev"
                    .into(),
            )
        }
    };
    let ttl = crate::duration::parse(&args.ttl)?;
    let mut attrs = Map::new();
    for a in &args.attrs {
        let (k, v) = parse_attr(a)?;
        attrs.insert(k, v);
    }
    Ok(crate::auth::mint_hs256(
        &secret,
        &args.user,
        attrs,
        Clock::system().now_secs(),
        Some(ttl.as_secs() as i64),
    ))
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    // `beckon` alone explains itself (contract §9) and is not an error.
    if std::env::args_os().len() == 1 {
        use clap::CommandFactory;
        let _ = Cli::command().print_long_help();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => match token(args) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("beckon token: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let cfg = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("beckon serve: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(&cfg);
            let dev = cfg.dev;
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("beckon serve: starting the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // After binding: the banner shows the port the OS chose for `--listen …:0`.
            let banner = move |addr| {
                if dev {
                    print_dev_banner(addr)
                }
            };
            match rt.block_on(crate::app::run(cfg, banner)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("beckon serve: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_parse_as_json_where_they_can() {
        assert_eq!(
            parse_attr("plan=pro").unwrap(),
            ("plan".into(), Value::String("pro".into()))
        );
        assert_eq!(parse_attr("seats=5").unwrap().1, Value::from(5));
        assert_eq!(parse_attr("beta=true").unwrap().1, Value::Bool(true));
        assert!(parse_attr("nope").is_err());
    }

    #[test]
    fn flags_override_file_and_dev_fills_secrets() {
        let args = ServeArgs {
            dev: true,
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ServeArgs::default()
        };
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.jwt.secret.as_deref(), Some(DEV_JWT_SECRET));
        let missing = ServeArgs::default().into_config().unwrap_err();
        assert!(missing.contains("JWT secret"), "{missing}");
    }

    #[test]
    fn token_takes_the_secret_from_the_flag_then_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("beckon.toml");
        std::fs::write(&file, "[jwt]\nsecret = \"from-file\"\n").unwrap();
        let args = |jwt_secret: Option<&str>, config: Option<PathBuf>| TokenArgs {
            user: "u_1".into(),
            attrs: vec![],
            ttl: "1h".into(),
            jwt_secret: jwt_secret.map(str::to_string),
            config,
            dev: false,
        };
        let signed_with = |t: &str, secret: &str| {
            let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
            jsonwebtoken::decode::<Value>(t, &key, &jsonwebtoken::Validation::default()).is_ok()
        };
        let t = token(args(None, Some(file.clone()))).unwrap();
        assert!(signed_with(&t, "from-file"));
        let t = token(args(Some("from-flag"), Some(file))).unwrap();
        assert!(signed_with(&t, "from-flag"));
        assert!(token(args(None, None)).unwrap_err().contains("--config"));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
