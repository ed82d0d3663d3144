//! The `imagefactory` command: the original's subcommands and options, running builds
//! in-process with the same engine and store as the daemon.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};

use crate::engine::{DeleteRequest, Engine, ProviderRequest};
use crate::image::{ImageKind, ImageRecord, Status};
use crate::store::Query;

#[derive(Parser, Debug)]
#[command(name = "imagefactory", version, about = "Build base, target and provider images from a template")]
pub struct Cli {
    /// Log debug messages (the default for the CLI, as in the original).
    #[arg(long, global = true, overrides_with = "nodebug")]
    debug: bool,
    /// Log only informational messages and above.
    #[arg(long, global = true)]
    nodebug: bool,
    /// Accepted for compatibility; same as the default logging.
    #[arg(long, global = true)]
    verbose: bool,
    /// The configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An extra plugin directory (added to the config's `plugins`).
    #[arg(long, global = true, value_name = "DIR")]
    plugins: Vec<PathBuf>,
    /// What to print: the original's log block, or the image as JSON.
    #[arg(long, global = true, value_enum, default_value = "log")]
    output: Output,
    /// Accepted for compatibility (the original's no-colour switch).
    #[arg(long, global = true)]
    raw: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Log,
    Json,
}

#[derive(Args, Debug, Default)]
struct ParamOpts {
    /// A JSON file of parameters.
    #[arg(long, value_name = "FILE")]
    parameters: Option<PathBuf>,
    /// One parameter (a literal string); overrides --parameters.
    #[arg(long = "parameter", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    parameter: Vec<String>,
    /// One parameter read from a file; overrides both of the above.
    #[arg(long = "file-parameter", num_args = 2, value_names = ["NAME", "FILE"], action = clap::ArgAction::Append)]
    file_parameter: Vec<String>,
    /// Build even when the build cache holds an equal build (the `no_cache` parameter).
    #[arg(long = "no-cache", alias = "no_cache")]
    no_cache: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a base image from a template.
    #[command(name = "base_image")]
    BaseImage {
        #[command(flatten)]
        params: ParamOpts,
        template: PathBuf,
    },
    /// Build a target image from a base image id or a template.
    #[command(name = "target_image")]
    TargetImage {
        #[arg(long, conflicts_with = "template", required_unless_present = "template")]
        id: Option<String>,
        #[arg(long)]
        template: Option<PathBuf>,
        #[command(flatten)]
        params: ParamOpts,
        target: String,
    },
    /// Push a target image to a provider (or build a snapshot image there).
    #[command(name = "provider_image")]
    ProviderImage {
        #[arg(long, conflicts_with = "template", required_unless_present = "template")]
        id: Option<String>,
        #[arg(long)]
        template: Option<PathBuf>,
        /// Build the image on the provider from the template instead of pushing one.
        #[arg(long)]
        snapshot: bool,
        #[command(flatten)]
        params: ParamOpts,
        target: String,
        /// A provider definition file, or a provider name written `@name`.
        provider: String,
        /// The provider_credentials file.
        credentials: PathBuf,
    },
    /// Import an existing disk file as a base image.
    #[command(name = "import_base_image")]
    ImportBaseImage {
        #[command(flatten)]
        params: ParamOpts,
        image_file: PathBuf,
    },
    /// List images matching a JSON spec, e.g. '{"type": "BaseImage"}'.
    Images { fetch_spec: String },
    /// Delete an image (provider images need --provider, --credentials and --target).
    Delete {
        id: String,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        credentials: Option<PathBuf>,
        #[arg(long)]
        target: Option<String>,
        /// Delete the image's children first.
        #[arg(long)]
        cascade: bool,
        #[command(flatten)]
        params: ParamOpts,
    },
    /// List the plugins found.
    Plugins {
        #[arg(long)]
        id: Option<String>,
    },
    /// Check a template; prints OK or every error.
    Validate { template: PathBuf },
    /// Follow an image (and its children) on a running daemon until it ends, through
    /// its event stream. Signs with IMAGEFACTORY_OAUTH_KEY and IMAGEFACTORY_OAUTH_SECRET.
    Watch {
        id: String,
        /// The daemon's address.
        #[arg(long, default_value = "http://127.0.0.1:8075")]
        url: String,
    },
}

/// Runs the command; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // `watch` prints the image's changes; its HTTP client's debug lines would bury them.
    let quiet = (cli.nodebug || matches!(cli.command, Command::Watch { .. })) && !cli.debug;
    crate::setup::init_logging(if quiet { "warn" } else { "debug" });
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imagefactory: {e:#}");
            1
        }
    }
}

fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn parameters(p: &ParamOpts) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(file) = &p.parameters {
        let text = read_text(file, "parameters file")?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => out = m,
            _ => bail!("Unable to read JSON from file provided in --parameters"),
        }
    }
    for pair in p.parameter.chunks(2) {
        if let [k, v] = pair {
            out.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for pair in p.file_parameter.chunks(2) {
        if let [k, f] = pair {
            out.insert(k.clone(), Value::String(read_text(Path::new(f), "file parameter")?));
        }
    }
    if p.no_cache {
        out.insert(crate::engine::cache::NO_CACHE.into(), Value::Bool(true));
    }
    Ok(out)
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Validate { template } = &cli.command {
        return validate(template, cli.config.as_deref());
    }
    if let Command::Watch { id, url } = &cli.command {
        return crate::watch::watch(url, id, crate::watch::Credentials::from_env().as_ref());
    }
    let config = crate::setup::load_config(cli.config.as_deref())?;
    let engine = crate::setup::engine(&config, &cli.plugins)?;
    let output = cli.output;
    match cli.command {
        Command::BaseImage { params, template } => {
            let rec = engine.create_base_image(&read_text(&template, "template")?, parameters(&params)?)?;
            Ok(follow(&engine, rec, output))
        }
        Command::TargetImage { id, template, params, target } => {
            let t = template.as_deref().map(|t| read_text(t, "template")).transpose()?;
            let rec = engine.create_target_image(&target, id.as_deref(), t.as_deref(), parameters(&params)?)?;
            Ok(follow(&engine, rec, output))
        }
        Command::ProviderImage { id, template, snapshot, params, target, provider, credentials } => {
            let mut parameters = parameters(&params)?;
            if snapshot {
                parameters.insert("snapshot".into(), Value::Bool(true));
            }
            let rec = engine.create_provider_image(ProviderRequest {
                provider: read_provider(&provider)?,
                credentials: read_text(&credentials, "credentials file")?,
                target,
                target_image_id: id,
                template: template.as_deref().map(|t| read_text(t, "template")).transpose()?,
                parameters,
            })?;
            Ok(follow(&engine, rec, output))
        }
        Command::ImportBaseImage { params, image_file } => {
            let rec = engine.import_base_image(&image_file, parameters(&params)?)?;
            Ok(follow(&engine, rec, output))
        }
        Command::Images { fetch_spec } => images(&engine, &fetch_spec),
        Command::Delete { id, provider, credentials, target, cascade, params } => {
            let req = DeleteRequest {
                provider: provider.as_deref().map(read_provider).transpose()?,
                credentials: credentials.as_deref().map(|c| read_text(c, "credentials file")).transpose()?,
                target,
                parameters: parameters(&params)?,
                cascade,
            };
            if let Err(e) = engine.delete(&id, req) {
                println!("{e}");
                return Ok(1);
            }
            println!("Deleting image with id {id}");
            match engine.wait_final(&id, &mut |_| {}) {
                None => Ok(0),
                Some(rec) if rec.status == Status::Deleted => Ok(0),
                Some(rec) => {
                    println!("Failed to delete image {id}: {}", rec.status_detail.error.unwrap_or_default());
                    Ok(1)
                }
            }
        }
        Command::Plugins { id } => {
            let entries: Vec<Value> = engine
                .plugins()
                .entries()
                .iter()
                .filter(|e| id.as_deref().is_none_or(|i| e.id == i))
                .map(crate::api::plugin_json)
                .collect();
            if id.is_some() && entries.is_empty() {
                bail!("No plugin found with id: {}", id.unwrap_or_default());
            }
            let v = if entries.len() == 1 && id.is_some() { entries[0].clone() } else { Value::Array(entries) };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        Command::Validate { .. } | Command::Watch { .. } => unreachable!("handled above"),
    }
}

/// A provider argument: `@name` is a literal name, otherwise a file to read.
fn read_provider(arg: &str) -> anyhow::Result<String> {
    if let Some(name) = arg.strip_prefix('@') {
        return Ok(name.to_string());
    }
    read_text(Path::new(arg), "provider definition")
}

fn validate(path: &Path, config: Option<&Path>) -> anyhow::Result<i32> {
    let config = crate::setup::load_config(config)?;
    let xml = read_text(path, "template")?;
    let opts = imagefactory_plugin_api::tdl::ParseOptions { require_root_pw: config.tdl_require_root_pw };
    match imagefactory_plugin_api::tdl::Template::parse(&xml, &opts) {
        Ok(_) => {
            println!("OK");
            Ok(0)
        }
        Err(e) => {
            for d in e.diagnostics() {
                println!("{}: {d}", path.display());
            }
            Ok(1)
        }
    }
}

fn images(engine: &Engine, spec: &str) -> anyhow::Result<i32> {
    let spec: Map<String, Value> = match serde_json::from_str(spec) {
        Ok(Value::Object(m)) => m,
        _ => bail!("fetch_spec must be a JSON object, e.g. '{{\"type\": \"BaseImage\"}}'"),
    };
    let mut q = Query::default();
    for (k, v) in &spec {
        let s = v.as_str().ok_or_else(|| anyhow!("fetch_spec value for {k} must be a string"))?;
        match k.as_str() {
            "type" => q.kind = Some(ImageKind::parse(s).ok_or_else(|| anyhow!("unknown image type {s}"))?),
            "status" => q.status = Some(Status::parse(s).ok_or_else(|| anyhow!("unknown status {s}"))?),
            "identifier" | "id" => q.identifier = Some(s.to_string()),
            "base_image_id" => q.base_image_id = Some(s.to_string()),
            "target_image_id" => q.target_image_id = Some(s.to_string()),
            other => bail!("cannot query by {other} (use type, status, identifier, base_image_id, target_image_id)"),
        }
    }
    let found: Vec<Value> =
        engine.query(&q)?.iter().map(|r| serde_json::to_value(&**r).unwrap_or(Value::Null)).collect();
    let v = if found.len() == 1 { found[0].clone() } else { serde_json::json!({ "images": found }) };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

/// Waits for the build, with a progress bar on a terminal, then prints the result.
fn follow(engine: &Engine, rec: ImageRecord, output: Output) -> i32 {
    let bar = (output == Output::Log && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(100);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos:>3}% {msg}") {
            b.set_style(style);
        }
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let id = rec.identifier.clone();
    let end = engine.wait_final(&id, &mut |r| {
        if let Some(b) = &bar {
            b.set_position(r.percent_complete as u64);
            b.set_message(format!("{} {}", r.status.as_str(), r.status_detail.activity));
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let Some(rec) = end else {
        eprintln!("image {id} disappeared during the build");
        return 1;
    };
    if output == Output::Json {
        let v = serde_json::to_value(&rec).unwrap_or(Value::Null);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return if rec.status == Status::Complete { 0 } else { 1 };
    }
    println!();
    println!("============ Final Image Details ============");
    println!("UUID: {}", rec.identifier);
    println!("Type: {}", rec.kind.singular());
    println!("Image filename: {}", rec.data);
    match rec.status {
        Status::Complete => {
            if let Some(p) = &rec.identifier_on_provider {
                println!("Image ID on provider: {p}");
            }
            println!("Image build completed SUCCESSFULLY!");
            0
        }
        Status::Failed => {
            println!();
            println!("Image build FAILED with error: {}", rec.status_detail.error.unwrap_or_default());
            1
        }
        other => {
            println!("WARNING - Reached end of build with an unexpected status - this should not happen");
            println!("Status: {}", other.as_str());
            println!("Status Details: {:?}", rec.status_detail);
            1
        }
    }
}
