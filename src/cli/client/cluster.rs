//! `distlog cluster status|add|remove|leader`: the membership, asked of
//! and changed through the leader. Members that serve peers on a port of
//! their own (`--peer-listen`) take the changes there only: `--url` is then
//! a peer URL (the client port answers 404 `peer_port_only`, naming it).

use std::io::Write;

use clap::{Args, Subcommand};
use distlog_client::ClusterInfo;

use super::connect::ConnectArgs;

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// A table of the members: id, URL, role, voter, match offset, lag, reachable.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The leader's GET /cluster as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add the node at URL, its URL or its peer URL (a learner, then a voter once caught up).
    Add {
        #[command(flatten)]
        connect: ConnectArgs,
        url: String,
    },
    /// Remove the member ID.
    Remove {
        #[command(flatten)]
        connect: ConnectArgs,
        id: u64,
    },
    /// Hand leadership to the voter ID.
    Leader {
        #[command(flatten)]
        connect: ConnectArgs,
        id: u64,
    },
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let info = match args.action {
        Action::Status { connect, json } => {
            let info = connect.client()?.cluster().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info.raw)?);
                return Ok(());
            }
            info
        }
        Action::Add { connect, url } => connect.client()?.add_member(&url).await?,
        Action::Remove { connect, id } => connect.client()?.remove_member(id).await?,
        Action::Leader { connect, id } => connect.client()?.transfer_leader(id).await?,
    };
    print_table(&mut std::io::stdout().lock(), &info)?;
    Ok(())
}

fn print_table(out: &mut impl Write, info: &ClusterInfo) -> std::io::Result<()> {
    let leader_match = info
        .members
        .iter()
        .find(|m| Some(m.id) == info.leader_id)
        .and_then(|m| m.match_offset);
    let rows: Vec<[String; 7]> = info
        .members
        .iter()
        .map(|member| {
            let role = if Some(member.id) == info.leader_id {
                "leader"
            } else {
                "follower"
            };
            let lag = match (leader_match, member.match_offset) {
                (Some(leader), Some(at)) => leader.saturating_sub(at).to_string(),
                _ => "-".into(),
            };
            [
                member.id.to_string(),
                member.url.clone(),
                role.into(),
                if member.voter { "yes" } else { "learner" }.into(),
                member.match_offset.map_or("-".into(), |m| m.to_string()),
                lag,
                member
                    .reachable
                    .map_or("-".into(), |r| if r { "yes" } else { "NO" }.into()),
            ]
        })
        .collect();
    let header = ["ID", "URL", "ROLE", "VOTER", "MATCH", "LAG", "REACHABLE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    writeln!(
        out,
        "term {}, commit offset {}",
        info.term,
        info.commit_offset.map_or("-".into(), |c| c.to_string())
    )
}
