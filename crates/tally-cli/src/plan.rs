//! `tally plan`: lint a tracking plan, say what changed between two, and
//! generate typed tracking code from one (docs/tracking-plan.md).
//!
//! `check` exits 1 when the plan has errors (warnings alone pass), `diff`
//! when a change is breaking; `--json` prints one JSON document instead
//! of lines.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tally_plan::codegen::{generate, Lang};
use tally_plan::diff::diff;
use tally_plan::lint::{check, Severity};
use tally_plan::{CompiledPlan, Plan};

/// Exit code of a plan with errors or a breaking diff.
const EXIT_FAILED: i32 = 1;

/// What to do with a plan.
#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {
    /// Lint FILE: naming rules, schemas, versions. Exits 1 on any error.
    Check {
        /// The plan (YAML, or JSON if it ends in .json).
        file: PathBuf,
        /// One JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// What changed from OLD to NEW, and whether it breaks events valid
    /// under OLD. Exits 1 on any breaking change.
    Diff {
        /// The plan as it was.
        old: PathBuf,
        /// The plan as it is now.
        new: PathBuf,
        /// One JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Typed tracking functions, one per event that is not deprecated.
    Codegen {
        /// The language.
        #[arg(long, value_parser = ["rust", "typescript", "kotlin", "swift"])]
        lang: String,
        /// Where to write the code (`-`: standard output).
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// The plan.
        file: PathBuf,
    },
}

pub fn run(cmd: PlanCommand) -> anyhow::Result<()> {
    match cmd {
        PlanCommand::Check { file, json } => run_check(&file, json),
        PlanCommand::Diff { old, new, json } => run_diff(&old, &new, json),
        PlanCommand::Codegen { lang, out, file } => run_codegen(&lang, &out, &file),
    }
}

fn load(path: &Path) -> anyhow::Result<Plan> {
    Plan::load(path).with_context(|| format!("loading the plan {}", path.display()))
}

fn run_check(file: &Path, json: bool) -> anyhow::Result<()> {
    let plan = load(file)?;
    let findings = check(&plan);
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "events": plan.events.len(),
            "errors": errors,
            "warnings": warnings,
            "findings": findings,
        });
        println!("{doc}");
    } else {
        for finding in &findings {
            println!("{finding}");
        }
        println!(
            "{}: {} events, {errors} errors, {warnings} warnings",
            file.display(),
            plan.events.len()
        );
    }
    if errors > 0 {
        std::process::exit(EXIT_FAILED);
    }
    Ok(())
}

fn run_diff(old: &Path, new: &Path, json: bool) -> anyhow::Result<()> {
    let d = diff(&load(old)?, &load(new)?);
    let breaking = d.changes.iter().filter(|c| c.breaking).count();
    if json {
        let doc = serde_json::json!({
            "breaking": d.is_breaking(),
            "changes": d.changes,
        });
        println!("{doc}");
    } else {
        for change in &d.changes {
            println!("{change}");
        }
        println!("{} changes, {breaking} breaking", d.changes.len());
    }
    if breaking > 0 {
        std::process::exit(EXIT_FAILED);
    }
    Ok(())
}

fn run_codegen(lang: &str, out: &Path, file: &Path) -> anyhow::Result<()> {
    let lang: Lang = lang.parse()?;
    // Compiling first refuses a plan whose schemas are not valid: code
    // generated from it would describe events the collector cannot judge.
    let plan = CompiledPlan::compile(load(file)?)
        .with_context(|| format!("compiling the plan {}", file.display()))?;
    let code = generate(plan.plan(), lang)?;
    if out == Path::new("-") {
        print!("{code}");
    } else {
        std::fs::write(out, code).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
