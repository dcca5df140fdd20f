package io.sluice.minicluster;

import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

/**
 * One Kafka broker in KRaft combined mode (broker and controller in the same process, no
 * ZooKeeper). Arguments: {@code dir}, {@code port} (clients) and {@code controllerPort}; any other
 * {@code key=value} is passed to the broker as a server property.
 */
final class KafkaBroker {
  private KafkaBroker() {}

  static void run(Map<String, String> kv) throws Exception {
    File dir = new File(kv.remove("dir"));
    String port = kv.remove("port");
    String controllerPort = kv.remove("controllerPort");
    File logDir = new File(dir, "data");
    Files.createDirectories(logDir.toPath());

    Properties p = new Properties();
    p.setProperty("process.roles", "broker,controller");
    p.setProperty("node.id", "1");
    p.setProperty("controller.quorum.voters", "1@127.0.0.1:" + controllerPort);
    p.setProperty(
        "listeners", "PLAINTEXT://127.0.0.1:" + port + ",CONTROLLER://127.0.0.1:" + controllerPort);
    p.setProperty("advertised.listeners", "PLAINTEXT://127.0.0.1:" + port);
    p.setProperty("controller.listener.names", "CONTROLLER");
    p.setProperty("inter.broker.listener.name", "PLAINTEXT");
    p.setProperty("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT");
    p.setProperty("log.dirs", logDir.getPath());
    p.setProperty("num.partitions", "1");
    // A single broker: internal topics (offsets, transactions) must fit on one replica.
    p.setProperty("offsets.topic.replication.factor", "1");
    p.setProperty("offsets.topic.num.partitions", "4");
    p.setProperty("transaction.state.log.replication.factor", "1");
    p.setProperty("transaction.state.log.min.isr", "1");
    p.setProperty("transaction.state.log.num.partitions", "4");
    p.setProperty("share.coordinator.state.topic.replication.factor", "1");
    p.setProperty("share.coordinator.state.topic.min.isr", "1");
    p.setProperty("group.initial.rebalance.delay.ms", "0");
    p.putAll(kv);
    File props = new File(dir, "server.properties");
    try (OutputStream out = new FileOutputStream(props)) {
      p.store(out, "written by the sluice test cluster launcher");
    }

    // KRaft needs formatted storage; a restart keeps the existing data (and cluster id).
    if (!new File(logDir, "meta.properties").exists()) {
      String clusterId = org.apache.kafka.common.Uuid.randomUuid().toString();
      int rc =
          kafka.tools.StorageTool.execute(
              new String[] {"format", "-t", clusterId, "-c", props.getPath()},
              System.err);
      if (rc != 0) {
        throw new IllegalStateException("kafka storage format failed with " + rc);
      }
    }

    // kafka.Kafka.main blocks until shutdown and installs its own SIGTERM hook, so readiness is
    // checked from a side thread with a real metadata request.
    Thread probe = new Thread(() -> awaitMetadata("127.0.0.1:" + port), "ready-probe");
    probe.setDaemon(true);
    probe.start();
    kafka.Kafka.main(new String[] {props.getPath()});
  }

  private static void awaitMetadata(String bootstrap) {
    Properties c = new Properties();
    c.setProperty(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    c.setProperty(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
    c.setProperty(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
    while (true) {
      try (Admin admin = Admin.create(c)) {
        int brokers = admin.describeCluster().nodes().get(3, TimeUnit.SECONDS).size();
        if (brokers > 0) {
          Launcher.ready("kafka", bootstrap);
          return;
        }
      } catch (Exception e) {
        // not serving yet
      }
      try {
        Thread.sleep(300);
      } catch (InterruptedException e) {
        return;
      }
    }
  }
}
