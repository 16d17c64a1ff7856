//! `tern plan`: the planner offline, on a JSON Lines file of users, under a policy bundle (the
//! translation is [`tern_daemon::translate`], the daemon's own).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use tern_daemon::predict::ModelPredictor;
use tern_daemon::translate::{assign_arms, planner_config, treatment, value_modes};
use tern_model::Model;
use tern_planner::{explain, jsonl, InlineScores, Planner, Predictor};
use tern_policy::Bundle;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The policy bundle directory.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// JSON Lines, one user per line with history, opportunities and predictions (format in
    /// docs/planner.md).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the schedule and the suppressions as JSON Lines; stdout when absent.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The Replan document whose horizon and exploration share apply; the first by name when
    /// absent.
    #[arg(long)]
    replan: Option<String>,
    /// The planning instant (RFC 3339); now when absent.
    #[arg(long)]
    now: Option<DateTime<Utc>>,
    /// Seed of the exploration draws: the same inputs and seed give the same schedule.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Score candidates with this model artifact (from `tern train --output` or `tern model
    /// export`) instead of the predictions carried in the input.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Instead of the schedule, print why this user got what they got.
    #[arg(long, value_name = "USER")]
    explain: Option<String>,
}

pub fn run(args: PlanArgs) -> Result<ExitCode> {
    let bundle = load_bundle(&args.policies)?;
    let config = planner_config(&bundle, args.replan.as_deref())?;
    let planner = Planner::new(config).context("the policy cannot be planned with")?;
    let input =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut users = jsonl::read_users(BufReader::new(input))
        .with_context(|| format!("{} is not valid planner input", args.input.display()))?;
    let assigned = assign_arms(&bundle, &mut users);
    // Each user's objective values sends in its own mode, as in the daemon.
    let (mode, modes) = value_modes(&bundle, &treatment(&assigned, &users));
    let now = args.now.unwrap_or_else(Utc::now);
    let predictor: Box<dyn Predictor> = match &args.model {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the model {}", path.display()))?;
            let model = Model::from_bytes(&bytes)
                .with_context(|| format!("{} is not a tern model", path.display()))?;
            Box::new(ModelPredictor::new(std::sync::Arc::new(model), now).with_modes(mode, modes))
        }
        None => Box::new(InlineScores),
    };
    let plan = planner.plan(&users, now, args.seed, predictor.as_ref())?;

    if let Some(user) = &args.explain {
        let text = users
            .iter()
            .find(|u| &u.user_id == user)
            .and_then(|u| explain(&planner, &plan, u))
            .ok_or_else(|| anyhow!("user {user:?} is not in {}", args.input.display()))?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    jsonl::write_plan(&planner, &plan, &mut out)?;
    out.flush()?;
    let chosen: u64 = plan.stats.chosen.values().sum();
    eprintln!(
        "planned {} users, {} candidates: {} chosen, policy {}",
        plan.users.len(),
        plan.stats.candidates,
        chosen,
        bundle.short_version()
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads a bundle for a command, with one line that says how to see every finding.
pub fn load_bundle(dir: &std::path::Path) -> Result<Bundle> {
    Bundle::load(dir).map_err(|findings| {
        anyhow!(
            "{} is not a valid policy bundle ({} error(s)); run `tern policy check {}`",
            dir.display(),
            findings.error_count(),
            dir.display()
        )
    })
}
