//! The ApplicationMaster ↔ NodeManager protocol: starting and stopping containers, each
//! NodeManager authenticated with the NMToken the ResourceManager issued for it.

use std::collections::HashMap;

use super::credentials::Token;
use super::ids;
use super::proto::yarn::{
    ContainerExceptionMapProto, ContainerLaunchContextProto, ContainerProto, NmTokenProto,
    NodeIdProto, StartContainerRequestProto, StartContainersRequestProto,
    StartContainersResponseProto, StopContainersRequestProto, StopContainersResponseProto,
};
use super::rpc::Connection;
use super::{Result, YarnError};

/// The protocol name NodeManagers serve container management under.
pub const PROTOCOL: &str = "org.apache.hadoop.yarn.api.ContainerManagementProtocolPB";

/// `host:port` of a NodeManager.
pub fn node_addr(node: Option<&NodeIdProto>) -> String {
    node.map(|n| format!("{}:{}", n.host(), n.port()))
        .unwrap_or_default()
}

/// NMTokens by NodeManager address; a NodeManager is contacted with the latest one, over
/// one connection kept per NodeManager.
#[derive(Default)]
pub struct NmClient {
    tokens: HashMap<String, Token>,
    /// Opened with the NodeManager's token of the time: dropped when a new token for it
    /// arrives, and after any failure but the server's exception (then the connection is in
    /// an unknown state).
    conns: HashMap<String, Connection>,
}

impl NmClient {
    /// Keeps the NMTokens of an allocate or register answer.
    pub fn add_tokens(&mut self, tokens: &[NmTokenProto]) {
        for t in tokens {
            if let Some(token) = &t.token {
                let addr = node_addr(t.node_id.as_ref());
                let token = Token::from(token.clone());
                if self.tokens.get(&addr) != Some(&token) {
                    self.conns.remove(&addr);
                    self.tokens.insert(addr, token);
                }
            }
        }
    }

    async fn connect(&self, container: &ContainerProto) -> Result<Connection> {
        let addr = node_addr(container.node_id.as_ref());
        let token = self.tokens.get(&addr).ok_or_else(|| YarnError::Container {
            container: container_name(container),
            message: format!("no NMToken for its NodeManager {addr}"),
        })?;
        Connection::connect(&addr, PROTOCOL, token).await
    }

    /// Calls `method` over the NodeManager's kept connection, or a new one. A kept
    /// connection may have been closed by the NodeManager while idle (Hadoop servers close
    /// idle connections), so a failure on one is retried once on a new connection; the
    /// NodeManager answers a repeated start of a started container with an exception.
    async fn call<Q: prost::Message, R: prost::Message + Default>(
        &mut self,
        container: &ContainerProto,
        method: &str,
        request: &Q,
    ) -> Result<R> {
        let addr = node_addr(container.node_id.as_ref());
        if let Some(mut conn) = self.conns.remove(&addr) {
            match conn.call(method, request).await {
                Ok(r) => {
                    self.conns.insert(addr, conn);
                    return Ok(r);
                }
                Err(e @ YarnError::Remote { .. }) => {
                    self.conns.insert(addr, conn);
                    return Err(e);
                }
                // The connection is unusable; the NodeManager may have closed it while idle.
                Err(_) => {}
            }
        }
        let mut conn = self.connect(container).await?;
        let result = conn.call(method, request).await;
        if matches!(result, Ok(_) | Err(YarnError::Remote { .. })) {
            self.conns.insert(addr, conn);
        }
        result
    }

    /// Starts `container` with `launch` on its NodeManager.
    ///
    /// Uses the NodeManager's kept connection (see [`Self::call`]); cancelling drops it (the
    /// container may then have started or not). A connection lost on a new connection is
    /// reported, not retried: the caller counts it as a failed launch.
    pub async fn start(
        &mut self,
        container: &ContainerProto,
        launch: ContainerLaunchContextProto,
    ) -> Result<()> {
        let req = StartContainersRequestProto {
            start_container_request: vec![StartContainerRequestProto {
                container_launch_context: Some(launch),
                container_token: container.container_token.clone(),
            }],
        };
        let resp: StartContainersResponseProto =
            self.call(container, "startContainers", &req).await?;
        match resp.failed_requests.first() {
            Some(f) => Err(failure(container, "start", f)),
            None => Ok(()),
        }
    }

    /// Stops `container` on its NodeManager. Connection handling as for [`Self::start`].
    pub async fn stop(&mut self, container: &ContainerProto) -> Result<()> {
        let req = StopContainersRequestProto {
            container_id: container.id.iter().cloned().collect(),
        };
        let resp: StopContainersResponseProto =
            self.call(container, "stopContainers", &req).await?;
        match resp.failed_requests.first() {
            Some(f) => Err(failure(container, "stop", f)),
            None => Ok(()),
        }
    }
}

/// The container's id as YARN prints it.
pub fn container_name(c: &ContainerProto) -> String {
    c.id.as_ref().map(ids::container_id).unwrap_or_default()
}

fn failure(container: &ContainerProto, what: &str, f: &ContainerExceptionMapProto) -> YarnError {
    let e = f.exception.clone().unwrap_or_default();
    YarnError::Container {
        container: container_name(container),
        message: format!(
            "the NodeManager {} refused to {what} it: {}: {}",
            node_addr(container.node_id.as_ref()),
            e.class_name(),
            e.message().lines().next().unwrap_or_default()
        ),
    }
}
