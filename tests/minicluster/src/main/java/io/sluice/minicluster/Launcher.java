package io.sluice.minicluster;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

/**
 * Starts one server of the loopback test cluster in this JVM.
 *
 * <p>Every server runs in its own process so that a test can kill exactly one of them. Addresses
 * come from the Hadoop configuration files on the classpath (the cluster's conf dir, written by
 * scripts/testcluster.sh) plus {@code key=value} arguments for per-process settings such as a
 * DataNode's storage directory. Each role prints one line {@code READY <role> ...} on stdout once
 * it serves, and stops on SIGTERM through JVM shutdown hooks.
 */
public final class Launcher {
  private Launcher() {}

  public static void main(String[] args) throws Exception {
    if (args.length == 0) {
      usage();
    }
    Map<String, String> kv = keyValues(args);
    try {
      run(args, kv);
    } catch (Throwable t) {
      // Server threads are not daemons: without an explicit exit a failed start would hang.
      System.err.println("FAILED " + args[0] + ": " + t);
      t.printStackTrace();
      System.exit(1);
    }
  }

  private static void run(String[] args, Map<String, String> kv) throws Exception {
    switch (args[0]) {
      case "free-ports" -> freePorts(Integer.parseInt(args[1]));
      case "zk" -> ZooKeeperNode.run(kv);
      case "namenode" -> HadoopRoles.nameNode(kv);
      case "datanode" -> HadoopRoles.dataNode(kv);
      case "resourcemanager" -> HadoopRoles.resourceManager(kv);
      case "nodemanager" -> HadoopRoles.nodeManager(kv);
      case "kafka" -> KafkaBroker.run(kv);
      default -> usage();
    }
  }

  private static void usage() {
    System.err.println(
        "usage: Launcher free-ports N | zk|namenode|datanode|resourcemanager|nodemanager|kafka"
            + " [key=value]...");
    System.exit(2);
  }

  private static Map<String, String> keyValues(String[] args) {
    Map<String, String> kv = new LinkedHashMap<>();
    for (int i = 1; i < args.length; i++) {
      int eq = args[i].indexOf('=');
      if (eq > 0) {
        kv.put(args[i].substring(0, eq), args[i].substring(eq + 1));
      }
    }
    return kv;
  }

  /**
   * Prints N distinct free loopback ports. All sockets stay open until every port is chosen, so
   * the same port is never handed out twice; the script records them before any server starts,
   * which lets a restarted server come back on the same address.
   */
  private static void freePorts(int n) throws Exception {
    List<ServerSocket> sockets = new ArrayList<>();
    try {
      for (int i = 0; i < n; i++) {
        ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
        sockets.add(s);
        System.out.println(s.getLocalPort());
      }
    } finally {
      for (ServerSocket s : sockets) {
        s.close();
      }
    }
  }

  /** The line testcluster.sh waits for. */
  static void ready(String role, String detail) {
    System.out.println("READY " + role + " " + detail);
    System.out.flush();
  }

  /** Keeps the main thread alive; SIGTERM runs the shutdown hooks and ends the JVM. */
  static void blockUntilShutdown() throws InterruptedException {
    new CountDownLatch(1).await();
  }

  static void onShutdown(String what, ThrowingRunnable r) {
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  try {
                    r.run();
                  } catch (Exception e) {
                    System.err.println("error stopping " + what + ": " + e);
                  }
                },
                "stop-" + what));
  }

  interface ThrowingRunnable {
    void run() throws Exception;
  }
}
