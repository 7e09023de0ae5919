//! A graph run started as one rank of a data-parallel run (`srun --ntasks N contracam suite run ... --only
//! STAGE`, as the Slurm executor's multi-task jobs run): every rank runs the stage, whose `pretrain` kind
//! trains as that rank through `ProcessStrategy`; rank 0 holds the runs dir's lock and publishes, the
//! others (followers) look the cache up read-only and build into a private temporary directory that is
//! deleted afterwards, so nothing they write can race rank 0's atomic publish.
use super::GraphRunError;
use crate::suite::graph::GraphSuite;
use crate::train::distributed::launched_rank;

/// None for rank 0 or a process no launcher started; else the follower's private build directory. A
/// launched run must name one stage (`--only`): the ranks meet in that stage's training.
pub(super) fn follower(
    suite: &GraphSuite,
    only: Option<&str>,
) -> Result<Option<tempfile::TempDir>, GraphRunError> {
    let Some((rank, world)) = launched_rank() else {
        return Ok(None);
    };
    if only.is_none() {
        return Err(GraphRunError::LaunchedWithoutOnly {
            path: suite.path.clone(),
            rank,
            world,
        });
    }
    if rank == 0 {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("contracam-rank{rank}-"))
        .tempdir()
        .map_err(|e| {
            GraphRunError::Cache(crate::suite::cache::CacheError::Io {
                path: std::env::temp_dir(),
                msg: format!("a private directory for rank {rank}'s copy of the stage: {e}"),
            })
        })?;
    Ok(Some(dir))
}
