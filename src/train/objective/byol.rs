//! BYOL as the official `models/byol.py`: predictions p of both views through the online network,
//! targets y through the EMA network (train-mode BatchNorm, no gradient),
//! loss −2·(mean cos(p1, y2) + mean cos(p2, y1)).
use tch::{Kind, Tensor};

use super::mix_loss::{byol_mix_loss, byol_mix_loss_rows, ViewMix};
use super::{Networks, Objective};
use crate::train::error::TrainError;
use crate::train::strategy::ExecutionStrategy;

#[derive(Default)]
pub struct Byol {
    /// `p1`, `p2`, `y1`, `y2` of the last step, detached.
    pub last: Vec<(&'static str, Tensor)>,
}

impl Objective for Byol {
    fn loss(
        &mut self,
        nets: &Networks,
        views: &[Tensor],
        _strategy: &dyn ExecutionStrategy,
    ) -> Result<Tensor, TrainError> {
        let [p1, p2, y1, y2] = predictions_and_targets(nets, views)?;
        // Projections and predictions are unit vectors already.
        let cos = |a: &Tensor, b: &Tensor| {
            (a * b)
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                .mean(Kind::Float)
        };
        let loss = (cos(&p1, &y2) + cos(&p2, &y1)) * -2.0;
        self.last = vec![
            ("p1", p1.detach()),
            ("p2", p2.detach()),
            ("y1", y1),
            ("y2", y2),
        ];
        Ok(loss)
    }

    /// `BYOLMixup` / `BYOLCutMix`: each cosine weighed by `lam`, the permuted partner's by `1 − lam`;
    /// `y1` comes from the mixed view 1.
    fn mixed_loss(
        &mut self,
        nets: &Networks,
        views: &[Tensor],
        mix: &ViewMix,
        strategy: &dyn ExecutionStrategy,
    ) -> Result<Tensor, TrainError> {
        let [p1, p2, y1, y2] = predictions_and_targets(nets, views)?;
        let loss = match &mix.rows {
            None => byol_mix_loss(&p1, &p2, &y1, &y2, &mix.lam, &mix.perm),
            // Drawn for the global batch: the partners' targets come from every rank.
            Some(rows) => byol_mix_loss_rows(
                &p1,
                &p2,
                &strategy.gather_rows(&y1)?,
                &strategy.gather_rows(&y2)?,
                &mix.lam,
                &mix.perm,
                rows.clone(),
            ),
        };
        self.last = vec![
            ("p1", p1.detach()),
            ("p2", p2.detach()),
            ("y1", y1),
            ("y2", y2),
        ];
        Ok(loss)
    }

    fn outputs(&self) -> &[(&'static str, Tensor)] {
        &self.last
    }
}

/// `p1`, `p2` through the online network (view 1 first, so BatchNorm statistics update in the official
/// order), then `y1`, `y2` through the target in train mode without gradient.
fn predictions_and_targets(nets: &Networks, views: &[Tensor]) -> Result<[Tensor; 4], TrainError> {
    let online = nets.online;
    let pred = online.predictor.as_ref().ok_or_else(|| {
        TrainError::config(
            "model.method",
            "byol",
            "the online network has no predictor",
        )
    })?;
    let (v1, v2) = (&views[0], &views[1]);
    let p1 = pred.forward(&online.project(v1, true), true);
    let p2 = pred.forward(&online.project(v2, true), true);
    let (y1, y2) = tch::no_grad(|| (nets.target.project(v1, true), nets.target.project(v2, true)));
    Ok([p1, p2, y1, y2])
}
