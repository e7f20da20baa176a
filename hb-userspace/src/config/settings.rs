//! The configuration converted into each layer's own settings: the layers
//! (datapath, detector) never read [`Config`]; the agent hands each one what
//! it needs from here.

use std::time::Duration;

use crate::{
    config::{Config, DetectorKind},
    datapath::DatapathSettings,
    detect::{
        detector::{DetectorSettings, FlapSettings, Rule},
        phi::{PhiDetector, PhiSettings, PhiSettingsError},
    },
};

impl Config {
    /// What the datapath is built from.
    pub fn datapath_settings(&self) -> DatapathSettings {
        DatapathSettings {
            kind: self.datapath,
            interfaces: self.interfaces.clone(),
            port: self.port,
            max_nodes: self.max_nodes,
            xdp_mode: self.xdp_mode,
            pass_heartbeats: self.pass_heartbeats,
            unauthenticated: self.auth.unauthenticated(),
            instance: self.instance.clone(),
        }
    }

    /// What the detector judges every node by.
    pub fn detector_settings(&self) -> Result<DetectorSettings, PhiSettingsError> {
        let detector = &self.detector;
        let rule = match detector.kind {
            DetectorKind::Timeout => Rule::Timeout,
            DetectorKind::Phi => {
                let at = |threshold| {
                    PhiDetector::new(PhiSettings {
                        threshold,
                        min_std_dev: detector.min_std_dev,
                        acceptable_pause: Duration::ZERO,
                    })
                };
                Rule::Phi {
                    detector: at(detector.phi_threshold)?,
                    suspect: at(detector.suspect_phi)?,
                    acceptable_pause_ns: detector.acceptable_pause.map(|p| p.as_nanos() as u64),
                }
            }
        };
        Ok(DetectorSettings {
            default_interval_ns: self.defaults.interval.as_nanos() as u64,
            timeout_multiplier: self.defaults.timeout_multiplier,
            rule,
            stall_ns: (self.defaults.sweep_period + detector.stall_threshold).as_nanos() as u64,
            rise: detector.rise,
            flap: FlapSettings {
                max_flaps: detector.flap_max,
                window_ns: detector.flap_window.as_nanos() as u64,
                stable_ns: detector.flap_stable.as_nanos() as u64,
            },
        })
    }
}
