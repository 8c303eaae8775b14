//! Write-back: `incidents update`, `alerts update`, `alerts comment`, `actions apply`,
//! `actions log`. The work is `xdrsync_pipeline::actions`; this file turns flags and files into
//! actions and results into tables.

use std::io::BufRead as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use xdrsync_model::action::{Action, Target};
use xdrsync_pipeline::actions::ActionReport;
use xdrsync_store::ActionOutcome;

use crate::cli::{ActionsCommand, AlertsCommand, ApplyArgs, CommentArgs, LogArgs, UpdateArgs};

pub(crate) async fn run(cmd: ActionsCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ActionsCommand::Apply(args) => apply(args, config_path).await,
        ActionsCommand::Log(args) => log(args, config_path),
    }
}

pub(crate) async fn alerts(cmd: AlertsCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        AlertsCommand::Update(args) => update(args, Target::Alert, config_path).await,
        AlertsCommand::Comment(args) => comment(args, config_path).await,
    }
}

/// `incidents update` / `alerts update`.
pub(crate) async fn update(
    args: UpdateArgs,
    target: Target,
    config_path: &Path,
) -> anyhow::Result<ExitCode> {
    let mut action = Action {
        tenant: args.tenant,
        target: Some(target),
        id: args.id,
        status: args.status,
        assign: if args.unassign {
            Some(String::new())
        } else {
            args.assign
        },
        classification: args.classification,
        determination: args.determination,
        comment: args.comment,
        resolving_comment: args.resolving_comment,
        ..Action::default()
    };
    for t in args.tags {
        match (t.strip_prefix('+'), t.strip_prefix('-')) {
            (Some(add), _) if !add.is_empty() => action.tags_add.push(add.to_owned()),
            (_, Some(remove)) if !remove.is_empty() => action.tags_remove.push(remove.to_owned()),
            _ => anyhow::bail!(crate::cli::UsageError(format!(
                "--tag `{t}`: write +TAG to add it or -TAG to remove it"
            ))),
        }
    }
    execute(vec![action], args.actor, args.dry_run, config_path).await
}

/// `alerts comment`.
async fn comment(args: CommentArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let action = Action {
        tenant: args.tenant,
        target: Some(Target::Alert),
        id: args.id,
        comment: Some(args.comment),
        ..Action::default()
    };
    execute(vec![action], args.actor, false, config_path).await
}

/// `actions apply FILE`.
async fn apply(args: ApplyArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            fs_err::File::open(&args.file).context("opening the actions file")?,
        ))
    };
    let mut actions = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let action: Action = serde_json::from_str(&line).map_err(|e| {
            crate::cli::UsageError(format!(
                "{} line {}: not an action: {e}",
                args.file.display(),
                n + 1
            ))
        })?;
        actions.push(action);
    }
    if actions.is_empty() {
        anyhow::bail!(crate::cli::UsageError(format!(
            "{} holds no action",
            args.file.display()
        )));
    }
    execute(actions, args.actor, args.dry_run, config_path).await
}

async fn execute(
    actions: Vec<Action>,
    actor: Option<String>,
    dry_run: bool,
    config_path: &Path,
) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let store = super::open_store(&config)?;
    let vault = if actions
        .iter()
        .filter_map(|a| config.tenant(&a.tenant))
        .any(|t| t.delegated)
    {
        Some(xdrsync_pipeline::open_vault(&config)?)
    } else {
        None
    };
    let client = xdrsync_pipeline::api_client_on(&config, store.as_ref())?;
    let reports = xdrsync_pipeline::actions::apply_actions(
        &config,
        &store,
        &client,
        vault.as_ref(),
        actions,
        actor.as_deref(),
        dry_run,
    )
    .await;
    print(&reports, dry_run)?;
    Ok(
        if reports.iter().any(|r| r.outcome == ActionOutcome::Failed) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn print(reports: &[ActionReport], dry_run: bool) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.tenant.clone(),
                r.target.as_str().to_owned(),
                crate::text::escape(&r.item),
                if dry_run
                    && r.outcome == ActionOutcome::Skipped
                    && !r.message.starts_with("already")
                {
                    "dry-run".to_owned()
                } else {
                    r.outcome.as_str().to_owned()
                },
                if r.diff.is_empty() {
                    "(no change)".to_owned()
                } else {
                    crate::text::clip(&r.diff.join("; "), 80)
                },
                crate::text::escape(&r.message),
            ]
        })
        .collect();
    crate::text::print_stdout(&crate::table::render(
        &["TENANT", "ON", "ID", "OUTCOME", "CHANGE", "MESSAGE"],
        &rows,
    ))?;
    let count = |o: ActionOutcome| reports.iter().filter(|r| r.outcome == o).count();
    eprintln!(
        "{} applied, {} skipped, {} failed.",
        count(ActionOutcome::Applied),
        count(ActionOutcome::Skipped),
        count(ActionOutcome::Failed)
    );
    Ok(())
}

/// `actions log`.
fn log(args: LogArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let store = super::open_store(&config)?;
    let tenant = match &args.tenant {
        Some(t) => Some(config.require_tenant(t)?.tenant_id.clone()),
        None => None,
    };
    let rows: Vec<Vec<String>> = store
        .actions(tenant.as_ref())?
        .into_iter()
        .map(|a| {
            let what = serde_json::from_str::<Action>(&a.request)
                .map(|act| act.describe().join("; "))
                .unwrap_or_else(|_| a.request.clone());
            vec![
                crate::text::time(a.created_at),
                crate::text::escape(&a.actor),
                a.tenant_name,
                format!("{} {}", a.target, crate::text::escape(&a.item_id)),
                crate::text::clip(&crate::text::escape(&what), 60),
                a.outcome.as_str().to_owned(),
                a.produced.map(crate::text::time).unwrap_or_default(),
                crate::text::clip(&crate::text::escape(&a.answer), 60),
                a.id,
            ]
        })
        .collect();
    crate::text::print_stdout(&crate::table::render(
        &[
            "WHEN", "WHO", "TENANT", "ITEM", "WHAT", "OUTCOME", "VERSION", "ANSWER", "ACTION",
        ],
        &rows,
    ))?;
    Ok(ExitCode::SUCCESS)
}
