//! YARN's ids in their string forms: `application_<cluster ts>_<nnnn>`,
//! `appattempt_<ts>_<nnnn>_<nnnnnn>` and `container_[e<epoch>_]<ts>_<nnnn>_<nn>_<nnnnnn>`.

use super::proto::yarn::{ApplicationAttemptIdProto, ApplicationIdProto, ContainerIdProto};

/// The container id's low 40 bits are the sequence number; the bits above it the RM epoch.
const EPOCH_SHIFT: u32 = 40;

/// Parses a container id string (as `CONTAINER_ID` gives it).
pub fn parse_container_id(s: &str) -> Option<ContainerIdProto> {
    let rest = s.strip_prefix("container_")?;
    let mut parts: Vec<&str> = rest.split('_').collect();
    let mut epoch = 0i64;
    if let Some(e) = parts.first().and_then(|p| p.strip_prefix('e')) {
        epoch = e.parse().ok()?;
        parts.remove(0);
    }
    let [ts, app, attempt, seq] = parts.as_slice() else {
        return None;
    };
    let app_id = ApplicationIdProto {
        id: Some(app.parse().ok()?),
        cluster_timestamp: Some(ts.parse().ok()?),
    };
    Some(ContainerIdProto {
        app_id: Some(app_id),
        app_attempt_id: Some(ApplicationAttemptIdProto {
            application_id: Some(app_id),
            attempt_id: Some(attempt.parse().ok()?),
        }),
        id: Some((epoch << EPOCH_SHIFT) | seq.parse::<i64>().ok()?),
    })
}

fn app_parts(app: Option<&ApplicationIdProto>) -> (i64, i32) {
    app.map(|a| (a.cluster_timestamp(), a.id()))
        .unwrap_or_default()
}

/// `application_<ts>_<nnnn>`.
pub fn application_id(app: Option<&ApplicationIdProto>) -> String {
    let (ts, id) = app_parts(app);
    format!("application_{ts}_{id:04}")
}

/// The container id as YARN prints it (`ContainerId.toString`).
pub fn container_id(c: &ContainerIdProto) -> String {
    let attempt = c.app_attempt_id.as_ref();
    let (ts, app) = app_parts(attempt.and_then(|a| a.application_id.as_ref()));
    let attempt_no = attempt.map(|a| a.attempt_id()).unwrap_or_default();
    let id = c.id();
    let epoch = id >> EPOCH_SHIFT;
    let seq = id & ((1i64 << EPOCH_SHIFT) - 1);
    let epoch = if epoch > 0 {
        format!("e{epoch:02}_")
    } else {
        String::new()
    };
    format!("container_{epoch}{ts}_{app:04}_{attempt_no:02}_{seq:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_round_trip() {
        for s in [
            "container_1764118000000_0001_01_000001",
            "container_e17_1764118000000_0012_02_1000001",
        ] {
            let c = parse_container_id(s).expect(s);
            assert_eq!(container_id(&c), s);
        }
        let c = parse_container_id("container_e17_1764118000000_0012_02_000003").unwrap();
        assert_eq!(c.id(), (17 << 40) | 3);
        assert_eq!(
            application_id(c.app_id.as_ref()),
            "application_1764118000000_0012"
        );
        assert_eq!(c.app_attempt_id.unwrap().attempt_id(), 2);
        assert!(parse_container_id("container_x_1_2_3").is_none());
        assert!(parse_container_id("application_1_2").is_none());
    }
}
