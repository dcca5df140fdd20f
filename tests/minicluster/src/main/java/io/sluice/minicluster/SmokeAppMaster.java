package io.sluice.minicluster;

import org.apache.hadoop.yarn.api.records.FinalApplicationStatus;
import org.apache.hadoop.yarn.client.api.AMRMClient;
import org.apache.hadoop.yarn.client.api.AMRMClient.ContainerRequest;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

/**
 * The smallest application master: registers with the ResourceManager and unregisters with
 * SUCCEEDED. YARN counts an AM container that exits without unregistering as a failed attempt,
 * so the smoke test's shell command runs this after writing to its log dir to let the
 * application reach FINISHED.
 */
public final class SmokeAppMaster {
  private SmokeAppMaster() {}

  public static void main(String[] args) throws Exception {
    AMRMClient<ContainerRequest> rm = AMRMClient.createAMRMClient();
    rm.init(new YarnConfiguration());
    rm.start();
    rm.registerApplicationMaster("", 0, "");
    System.out.println("smoke application master registered in " + System.getenv("CONTAINER_ID"));
    rm.unregisterApplicationMaster(FinalApplicationStatus.SUCCEEDED, "", "");
    rm.stop();
  }
}
