import type { Logger } from "@spool/kit";
import { passwordProblem } from "../domain/password-policy.js";
import type { Accounts } from "./accounts.js";

export interface BootstrapConfig {
  orgName: string;
  orgSlug: string;
  adminEmail: string;
  adminPassword: string;
}

/**
 * The first organisation and its operator-owner, from configuration. Runs on
 * every boot and converges: each step is "create if missing", so a bootstrap
 * cut short is completed, and one that finished is left alone (the password
 * in configuration does not overwrite a changed one).
 */
export async function bootstrap(accounts: Accounts, config: BootstrapConfig, logger: Logger): Promise<void> {
  const problem = passwordProblem(config.adminPassword);
  if (problem) throw new Error(`SPOOL_BOOTSTRAP_ADMIN_PASSWORD ${problem}`);
  const org = await accounts.createOrganization(config.orgName, config.orgSlug, "bootstrap");
  const admin = await accounts.createUser(
    org.orgId,
    {
      email: config.adminEmail,
      displayName: "Administrator",
      password: config.adminPassword,
      roles: ["owner"],
    },
    { createdVia: "bootstrap", operator: true, actor: "bootstrap" },
  );
  logger.info(
    {
      orgId: org.orgId,
      orgCreated: org.created,
      adminUserId: admin.user.userId,
      adminCreated: admin.created,
    },
    "bootstrap converged",
  );
}
