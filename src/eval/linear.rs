//! Linear evaluation on frozen features (stand-in: full-batch softmax regression fitted with Adam over a
//! small weight-decay sweep, selected on validation accuracy). The faithful L-BFGS protocol replaces it.
use serde::{Deserialize, Serialize};
use tch::nn::{Adam, OptimizerConfig, VarStore};
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("linear eval: {0}")]
    Input(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearEvalConfig {
    pub weight_decays: Vec<f64>,
    pub steps: usize,
    pub lr: f64,
}

impl Default for LinearEvalConfig {
    fn default() -> Self {
        Self {
            weight_decays: vec![1e-6, 1e-4, 1e-2],
            steps: 300,
            lr: 0.05,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearEvalResult {
    pub test_accuracy: f64,
    pub val_accuracy: f64,
    pub best_weight_decay: f64,
}

pub fn linear_eval(
    train_x: &Tensor,
    train_y: &Tensor,
    val_x: &Tensor,
    val_y: &Tensor,
    test_x: &Tensor,
    test_y: &Tensor,
    cfg: &LinearEvalConfig,
) -> Result<LinearEvalResult, EvalError> {
    let d = train_x.size()[1];
    let classes = 1 + [train_y, val_y, test_y]
        .iter()
        .map(|y| y.max().int64_value(&[]))
        .max()
        .unwrap_or(0);
    let mut best: Option<LinearEvalResult> = None;
    for &wd in &cfg.weight_decays {
        tch::manual_seed(0);
        let vs = VarStore::new(train_x.device());
        let w = vs.root().randn("weight", &[classes, d], 0.0, 0.01);
        let b = vs.root().randn("bias", &[classes], 0.0, 0.01);
        let mut opt = Adam::default().build(&vs, cfg.lr)?;
        for _ in 0..cfg.steps {
            let logits = train_x.linear(&w, Some(&b));
            let reg = (w.square().mean(Kind::Float) + b.square().mean(Kind::Float)) * (0.5 * wd);
            opt.backward_step(&(logits.cross_entropy_for_logits(train_y) + reg));
        }
        let acc = |x: &Tensor, y: &Tensor| {
            tch::no_grad(|| {
                x.linear(&w, Some(&b))
                    .argmax(1, false)
                    .eq_tensor(y)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[])
            })
        };
        let r = LinearEvalResult {
            test_accuracy: acc(test_x, test_y),
            val_accuracy: acc(val_x, val_y),
            best_weight_decay: wd,
        };
        if best
            .as_ref()
            .is_none_or(|b| r.val_accuracy > b.val_accuracy)
        {
            best = Some(r);
        }
    }
    best.ok_or_else(|| EvalError::Input("empty weight-decay sweep".into()))
}
