//! Training objectives: the loss of one step given the augmented views and the online and target
//! networks. `moco`: MoCo v2 (queue of keys, one direction); `byol`: BYOL (symmetric cosine);
//! `mix_loss`: their Mixup/CutMix variants.
pub mod byol;
pub mod mix_loss;
pub mod moco;

use tch::Tensor;

use super::error::TrainError;
use super::strategy::ExecutionStrategy;
use crate::model::ContrastiveModel;

pub use byol::Byol;
pub use mix_loss::{MixWeighting, ViewMix};
pub use moco::Moco;

/// The networks a step uses: the online network being optimised and its momentum/target copy.
pub struct Networks<'a> {
    pub online: &'a ContrastiveModel,
    pub target: &'a ContrastiveModel,
}

pub trait Objective {
    /// The loss of one step on augmented views (`views[0]` is the query/first view). It may update the
    /// objective's own state (MoCo enqueues this step's keys after the loss and before backward, as the
    /// official code).
    fn loss(
        &mut self,
        nets: &Networks,
        views: &[Tensor],
        strategy: &dyn ExecutionStrategy,
    ) -> Result<Tensor, TrainError>;

    /// The loss of a step whose view 1 was mixed with the images `mix.perm` (Mixup, CutMix): the
    /// official `*_mixup` / `*_cutmix` losses, with the same state updates as `loss`.
    fn mixed_loss(
        &mut self,
        _nets: &Networks,
        _views: &[Tensor],
        _mix: &ViewMix,
        _strategy: &dyn ExecutionStrategy,
    ) -> Result<Tensor, TrainError> {
        Err(TrainError::config(
            "train.mix.kind",
            "mixup/cutmix",
            "this objective has no mixed loss",
        ))
    }

    /// The named intermediate outputs of the last `loss` call, detached (MoCo: `q`, `k`, `logits`;
    /// BYOL: `p1`, `p2`, `y1`, `y2`), for inspection and parity tests.
    fn outputs(&self) -> &[(&'static str, Tensor)];

    /// MoCo's state (queue and pointer), to inspect or restore it; `None` for other objectives.
    fn as_moco_mut(&mut self) -> Option<&mut Moco> {
        None
    }
}
