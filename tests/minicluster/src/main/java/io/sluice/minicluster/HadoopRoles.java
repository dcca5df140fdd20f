package io.sluice.minicluster;

import java.net.InetSocketAddress;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSNNTopology;
import org.apache.hadoop.hdfs.server.datanode.DataNode;
import org.apache.hadoop.net.NetUtils;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.nodemanager.NodeManager;
import org.apache.hadoop.yarn.server.resourcemanager.ResourceManager;

/**
 * HDFS and YARN daemons. Shared settings (addresses, scheduler, log aggregation) come from
 * core-site.xml, hdfs-site.xml and yarn-site.xml on the classpath, so the servers and every client
 * read the same files; per-process settings (storage dirs, a NodeManager's ports) are arguments.
 */
final class HadoopRoles {
  private HadoopRoles() {}

  /**
   * NameNode(s) without DataNodes, from MiniDFSCluster because it formats and, for HA, sets up
   * the shared edits dir and both NameNodes. DataNodes run in their own JVMs so that a test can
   * kill one. The NameNode is freshly formatted, unless {@code format=false}: then it loads the
   * namespace a previous NameNode process left in {@code dir} (a restart after a crash).
   */
  static void nameNode(Map<String, String> kv) throws Exception {
    // MiniDFSCluster lowers dfs.replication to its own DataNode count, which is 0 here; the
    // NameNode would then hand out replication 0 as the server default (NodeManagers' log
    // aggregation relies on it). Keep the configured value.
    Configuration base =
        new HdfsConfiguration() {
          @Override
          public void setInt(String name, int value) {
            if (!"dfs.replication".equals(name)) {
              super.setInt(name, value);
            }
          }
        };
    Configuration conf = withOverrides(base, kv);
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, require(kv, "dir"));
    MiniDFSCluster.Builder builder =
        new MiniDFSCluster.Builder(conf)
            .numDataNodes(0)
            .format(!"false".equals(kv.getOrDefault("format", "true")))
            .checkExitOnShutdown(false);
    String ns = conf.getTrimmed("dfs.nameservices", "");
    if (ns.isEmpty()) {
      builder
          .nameNodePort(port(conf, "dfs.namenode.rpc-address"))
          .nameNodeHttpPort(port(conf, "dfs.namenode.http-address"));
    } else {
      MiniDFSNNTopology.NSConf nsConf = new MiniDFSNNTopology.NSConf(ns);
      for (String nn : conf.getTrimmedStrings("dfs.ha.namenodes." + ns)) {
        nsConf.addNN(
            new MiniDFSNNTopology.NNConf(nn)
                .setIpcPort(port(conf, "dfs.namenode.rpc-address." + ns + "." + nn))
                .setHttpPort(port(conf, "dfs.namenode.http-address." + ns + "." + nn)));
      }
      builder.nnTopology(new MiniDFSNNTopology().addNameservice(nsConf));
    }
    MiniDFSCluster cluster = new ExternalDataNodesCluster(builder);
    Launcher.onShutdown("namenode", () -> cluster.shutdown());
    if (!ns.isEmpty()) {
      // Manual failover only: the first NameNode becomes active, the second stays standby.
      cluster.transitionToActive(0);
    }
    // The constructor already waited for the NameNodes; testcluster.sh checks safe mode and
    // live DataNodes.
    Launcher.ready("namenode", conf.get("fs.defaultFS"));
    Launcher.blockUntilShutdown();
  }

  /**
   * A MiniDFSCluster whose DataNodes run elsewhere. MiniDFSCluster waits, while it starts, until
   * the NameNode reports exactly its own DataNodes (none); ours, in other JVMs, register with a
   * restarted NameNode while it starts, and that wait would never end.
   */
  private static final class ExternalDataNodesCluster extends MiniDFSCluster {
    ExternalDataNodesCluster(MiniDFSCluster.Builder builder) throws java.io.IOException {
      super(builder);
    }

    @Override
    public void waitActive() {}
  }

  /** One DataNode; {@code dfs.datanode.data.dir} is given as an argument. */
  static void dataNode(Map<String, String> kv) throws Exception {
    Configuration conf = withOverrides(new HdfsConfiguration(), kv);
    DataNode dn = DataNode.createDataNode(new String[0], conf);
    Launcher.onShutdown("datanode", dn::shutdown);
    while (!dn.isDatanodeFullyStarted()) {
      Thread.sleep(100);
    }
    Launcher.ready("datanode", dn.getDisplayName());
    Launcher.blockUntilShutdown();
  }

  static void resourceManager(Map<String, String> kv) throws Exception {
    Configuration conf = withOverrides(yarnConf(), kv);
    ResourceManager rm = new ResourceManager();
    rm.init(conf);
    rm.start();
    Launcher.onShutdown("resourcemanager", rm::stop);
    Launcher.ready("resourcemanager", conf.get(YarnConfiguration.RM_ADDRESS));
    Launcher.blockUntilShutdown();
  }

  /** One NodeManager; its ports and local/log dirs are arguments. */
  static void nodeManager(Map<String, String> kv) throws Exception {
    Configuration conf = withOverrides(yarnConf(), kv);
    NodeManager nm = new NodeManager();
    nm.init(conf);
    nm.start();
    Launcher.onShutdown("nodemanager", nm::stop);
    Launcher.ready("nodemanager", conf.get(YarnConfiguration.NM_ADDRESS));
    Launcher.blockUntilShutdown();
  }

  /**
   * YARN settings on top of HDFS ones: the NodeManager writes aggregated logs to HDFS, and
   * without hdfs-site.xml/hdfs-default.xml it asks for replication 0.
   */
  private static Configuration yarnConf() {
    return new YarnConfiguration(new HdfsConfiguration());
  }

  private static Configuration withOverrides(Configuration conf, Map<String, String> kv) {
    kv.forEach(
        (k, v) -> {
          if (k.contains(".")) {
            conf.set(k, v);
          }
        });
    return conf;
  }

  private static int port(Configuration conf, String key) {
    InetSocketAddress addr = NetUtils.createSocketAddr(require(conf.get(key), key));
    return addr.getPort();
  }

  private static String require(Map<String, String> kv, String key) {
    return require(kv.get(key), key);
  }

  private static String require(String value, String key) {
    if (value == null || value.isEmpty()) {
      throw new IllegalArgumentException("missing setting " + key);
    }
    return value;
  }
}
