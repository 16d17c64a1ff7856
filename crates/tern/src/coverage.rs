//! `tern bench ope`: the command line of [`tern_analysis::coverage`], the off-policy
//! estimators' intervals checked against the truth on the simulator.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use tern_analysis::coverage::{policies, run_seed, table, Row, Study};

#[derive(Debug, clap::Args)]
pub struct CoverageArgs {
    /// Simulated users per seed.
    #[arg(long, default_value_t = 3000)]
    users: usize,
    /// Days of opportunities decided (their sends are delivered until a day later).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=14))]
    days: u32,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds, one after the other.
    #[arg(long, default_value_t = 20)]
    seeds: u32,
    /// The logging policy's exploration share.
    #[arg(long, default_value_t = 0.3)]
    exploration: f64,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    level: f64,
    /// Print every seed's figures as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CoverageArgs) -> Result<ExitCode> {
    let study = Study {
        users: args.users,
        days: args.days,
        exploration: args.exploration,
        level: args.level,
    };
    let (logging, candidate) = policies()?;
    let mut all: Vec<Row> = Vec::new();
    // Per seed: the logging policy's send share, the candidate's, and how often the replayed
    // candidate repeats the logged action.
    let mut shares: Vec<[f64; 3]> = Vec::new();
    for seed in args.seed..args.seed + u64::from(args.seeds) {
        let started = std::time::Instant::now();
        let r = run_seed(&study, &logging, &candidate, seed)?;
        let n = r.decisions.max(1) as f64;
        shares.push([
            r.logged_sends as f64 / n,
            r.candidate_sends as f64 / n,
            r.agree as f64 / n,
        ]);
        if !args.json {
            eprintln!(
                "seed {seed}: {} decisions; the logging policy sent {}, the candidate {}; replayed, the candidate repeats the logged action on {}; {:.0}s",
                r.decisions,
                r.logged_sends,
                r.candidate_sends,
                r.agree,
                started.elapsed().as_secs_f64()
            );
        }
        all.extend(r.rows);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "rows": all }))?);
        return Ok(ExitCode::SUCCESS);
    }
    let mean =
        |k: usize| 100.0 * shares.iter().map(|s| s[k]).sum::<f64>() / shares.len().max(1) as f64;
    println!(
        "{} users, {} day(s) of opportunities per seed. The logging policy ({:.0}% exploration) sent on {:.1}% of decisions, the candidate on {:.1}%; replayed on the log, the candidate repeats the logged action on {:.1}%.\n",
        args.users,
        args.days,
        100.0 * args.exploration,
        mean(0),
        mean(1),
        mean(2)
    );
    print!("{}", table(&all, args.level));
    Ok(ExitCode::SUCCESS)
}
