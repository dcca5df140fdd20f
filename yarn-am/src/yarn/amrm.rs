//! The ApplicationMaster ↔ ResourceManager protocol: register, heartbeat (`allocate`),
//! unregister. The connection authenticates with the AMRMToken and follows its rolling: when
//! an allocate answer carries a new token, the next call reconnects with it.

use std::time::Duration;

use prost::Message;

use super::credentials::Token;
use super::proto::yarn::{
    AllocateRequestProto, AllocateResponseProto, AmCommandProto, ContainerIdProto,
    FinalApplicationStatusProto, FinishApplicationMasterRequestProto,
    FinishApplicationMasterResponseProto, RegisterApplicationMasterRequestProto,
    RegisterApplicationMasterResponseProto, ResourceRequestProto,
};
use super::rpc::Connection;
use super::{Result, YarnError};

/// The protocol name the ResourceManager serves the ApplicationMaster protocol under.
pub const PROTOCOL: &str = "org.apache.hadoop.yarn.api.ApplicationMasterProtocolPB";
/// How often a call is tried on a fresh connection after the connection failed.
const ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// A client of the ResourceManager's scheduler address for one application attempt.
pub struct AmRmClient {
    addr: String,
    token: Token,
    conn: Option<Connection>,
    response_id: i32,
    registration: Option<RegisterApplicationMasterRequestProto>,
}

impl AmRmClient {
    /// A client of `addr` (`yarn.resourcemanager.scheduler.address`) authenticating with the
    /// AMRMToken `token`; it connects on the first call.
    pub fn new(addr: &str, token: Token) -> AmRmClient {
        AmRmClient {
            addr: addr.to_string(),
            token,
            conn: None,
            response_id: 0,
            registration: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The AMRMToken in use (the latest rolled one).
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Calls `method`, reconnecting when the connection is gone. A lost connection is tried
    /// again [`ATTEMPTS`] times: allocate may repeat safely (the ResourceManager answers a
    /// repeated response id with its previous answer), register and finish are idempotent.
    async fn call<Q: Message, R: Message + Default>(&mut self, method: &str, req: &Q) -> Result<R> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_DELAY).await;
            }
            if self.conn.is_none() {
                match Connection::connect(&self.addr, PROTOCOL, &self.token).await {
                    Ok(c) => self.conn = Some(c),
                    Err(e @ YarnError::Sasl { .. }) => return Err(e),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let conn = self.conn.as_mut().expect("connected above");
            match conn.call(method, req).await {
                Ok(r) => return Ok(r),
                Err(e @ (YarnError::Remote { .. } | YarnError::Sasl { .. })) => return Err(e),
                Err(e) => {
                    self.conn = None;
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Registers the ApplicationMaster: `host` and `rpc_port` are where clients reach it
    /// (the REST API), `tracking_url` its web address.
    ///
    /// Cancellation drops the connection; the next call reconnects. A connection lost
    /// midway is retried (registering twice is harmless).
    pub async fn register(
        &mut self,
        host: &str,
        rpc_port: u16,
        tracking_url: &str,
    ) -> Result<RegisterApplicationMasterResponseProto> {
        let req = RegisterApplicationMasterRequestProto {
            host: Some(host.to_string()),
            rpc_port: Some(rpc_port as i32),
            tracking_url: Some(tracking_url.to_string()),
        };
        let resp = self.call("registerApplicationMaster", &req).await?;
        self.registration = Some(req);
        self.response_id = 0;
        Ok(resp)
    }

    /// One heartbeat: `ask` replaces the outstanding requests of the same priority,
    /// location and capability; `release` gives containers back. Handles the answer's
    /// bookkeeping: the response id, a rolled AMRMToken (the next call reconnects with it)
    /// and a resync order after a ResourceManager restart (registers again; the caller's
    /// next asks must then be complete, as the ResourceManager forgot them).
    ///
    /// Cancellation drops the connection; repeating the heartbeat is safe. A connection
    /// lost midway is retried on a new connection, then reported as `Io`/`Timeout`.
    pub async fn allocate(
        &mut self,
        ask: Vec<ResourceRequestProto>,
        release: Vec<ContainerIdProto>,
        progress: f32,
    ) -> Result<AllocateResponseProto> {
        let req = AllocateRequestProto {
            ask,
            release,
            response_id: Some(self.response_id),
            progress: Some(progress),
        };
        let resp: AllocateResponseProto = self.call("allocate", &req).await?;
        self.response_id = resp.response_id();
        if let Some(t) = &resp.am_rm_token {
            let mut token = Token::from(t.clone());
            // The new token is selected by kind; keep the service the old one named.
            if token.service.is_empty() {
                token.service = self.token.service.clone();
            }
            if token != self.token {
                eprintln!("sluice-am: the ResourceManager rolled the AMRMToken; reconnecting");
                self.token = token;
                self.conn = None;
            }
        }
        if resp.a_m_command == Some(AmCommandProto::AmResync as i32) {
            eprintln!("sluice-am: the ResourceManager asks to resync; registering again");
            if let Some(reg) = self.registration.clone() {
                let _: RegisterApplicationMasterResponseProto =
                    self.call("registerApplicationMaster", &reg).await?;
            }
            self.response_id = 0;
        }
        Ok(resp)
    }

    /// Unregisters with the final status; waits until the ResourceManager confirms.
    ///
    /// Cancellation drops the connection; unregistering again is harmless. Fails if the
    /// ResourceManager stays unreachable after the retries.
    pub async fn finish(
        &mut self,
        status: FinalApplicationStatusProto,
        diagnostics: &str,
        tracking_url: &str,
    ) -> Result<()> {
        let req = FinishApplicationMasterRequestProto {
            diagnostics: Some(diagnostics.to_string()),
            tracking_url: Some(tracking_url.to_string()),
            final_application_status: Some(status as i32),
        };
        // The ResourceManager answers "not yet" while it saves the final state.
        for _ in 0..100 {
            let resp: FinishApplicationMasterResponseProto =
                self.call("finishApplicationMaster", &req).await?;
            if resp.is_unregistered() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(YarnError::Timeout {
            addr: self.addr.clone(),
            what: "the confirmation of finishApplicationMaster".into(),
            secs: 10,
        })
    }
}
