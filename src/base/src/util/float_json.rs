//! JSON for floats that may be NaN: serde_json writes a non-finite f64 as `null` and then refuses to read
//! `null` back into an f64, so a report holding one could be written but not read (a diverged L-BFGS step
//! leaves a NaN objective). With `#[serde(with = "crate::util::float_json::nan_as_null")]` the field is
//! written as before (`null` for NaN) and `null` reads back as NaN.

pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct P {
        #[serde(with = "super::nan_as_null")]
        x: f64,
    }

    #[test]
    fn nan_round_trips_through_null_and_numbers_are_unchanged() {
        let s = serde_json::to_string(&P { x: f64::NAN }).unwrap();
        assert_eq!(s, r#"{"x":null}"#);
        assert!(serde_json::from_str::<P>(&s).unwrap().x.is_nan());
        let v = 0.1 + 0.2;
        let back: P = serde_json::from_str(&serde_json::to_string(&P { x: v }).unwrap()).unwrap();
        assert_eq!(back.x.to_bits(), v.to_bits());
        assert!(serde_json::from_str::<P>(r#"{"x":"a"}"#).is_err());
    }
}
