package io.sluice.minicluster;

import java.io.File;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Map;
import java.util.Properties;
import org.apache.zookeeper.server.ServerConfig;
import org.apache.zookeeper.server.ZooKeeperServerMain;
import org.apache.zookeeper.server.quorum.QuorumPeerConfig;
import org.apache.zookeeper.server.quorum.QuorumPeerMain;

/**
 * A ZooKeeper server: standalone, or one member of an ensemble when {@code server.N} entries are
 * given. Arguments are zoo.cfg properties, plus {@code myid} for an ensemble member.
 */
final class ZooKeeperNode {
  private ZooKeeperNode() {}

  static void run(Map<String, String> kv) throws Exception {
    Properties p = new Properties();
    p.setProperty("tickTime", "500");
    p.setProperty("initLimit", "20");
    p.setProperty("syncLimit", "10");
    p.setProperty("clientPortAddress", "127.0.0.1");
    // The admin server would take port 8080; srvr/ruok are what the script probes.
    p.setProperty("admin.enableServer", "false");
    p.setProperty("4lw.commands.whitelist", "srvr,ruok,stat,mntr,conf");
    String myid = kv.remove("myid");
    p.putAll(kv);

    File dataDir = new File(p.getProperty("dataDir"));
    Files.createDirectories(dataDir.toPath());
    if (myid != null) {
      Files.writeString(new File(dataDir, "myid").toPath(), myid + "\n");
    }
    QuorumPeerConfig config = new QuorumPeerConfig();
    config.parseProperties(p);
    int port = config.getClientPortAddress().getPort();

    // The server's run method blocks, so readiness is reported from a side thread once the
    // server answers `srvr` with a mode (an ensemble member only does after a leader is elected).
    Thread probe =
        new Thread(
            () -> {
              while (true) {
                String srvr = fourLetterWord(port, "srvr");
                if (srvr.contains("Mode: ")) {
                  String mode = srvr.substring(srvr.indexOf("Mode: ") + 6).split("\n")[0];
                  Launcher.ready("zk", "127.0.0.1:" + port + " " + mode);
                  return;
                }
                sleep(200);
              }
            },
            "ready-probe");
    probe.setDaemon(true);
    probe.start();

    if (config.isDistributed()) {
      new QuorumPeerMain().runFromConfig(config);
    } else {
      ServerConfig standalone = new ServerConfig();
      standalone.readFrom(config);
      new ZooKeeperServerMain().runFromConfig(standalone);
    }
  }

  private static String fourLetterWord(int port, String word) {
    try (Socket s = new Socket("127.0.0.1", port)) {
      OutputStream out = s.getOutputStream();
      out.write(word.getBytes(StandardCharsets.US_ASCII));
      out.flush();
      InputStream in = s.getInputStream();
      return new String(in.readAllBytes(), StandardCharsets.US_ASCII);
    } catch (Exception e) {
      return "";
    }
  }

  private static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
