import { createHmac } from "node:crypto";
import { connectNats, EventStore, Namespace } from "@spool/kit";
import { useInfra } from "@spool/testing";
import { describe, expect, it } from "vitest";
import { EmailClaimed, OrganizationSlugClaimed, Subjects } from "../src/domain/events.js";
import { authEnv, call, startTestAuth } from "./harness.js";

const infra = useInfra("authboot");

describe("bootstrap", () => {
  it("completes a half-finished bootstrap: claims made, organisation and admin missing", async () => {
    const env = authEnv(infra());
    // A previous start died after claiming the slug and the email, before creating anything else.
    const nc = await connectNats({ url: infra().natsUrl, name: "bootstrap-test" });
    const store = new EventStore(nc, { namespace: new Namespace(infra().streamPrefix) });
    await store.ensureStream({ name: "AUTH", subjects: ["auth.>"] });
    await store.append(
      Subjects.slug("root"),
      [OrganizationSlugClaimed.create({ slug: "root", orgId: "org-from-crash" })],
      {
        expectedSequence: 0,
      },
    );
    const emailKey = createHmac("sha256", Buffer.from(env.SPOOL_TOKEN_SECRET!, "base64"))
      .update("spool email subjects")
      .digest();
    const emailHash = createHmac("sha256", emailKey)
      .update("admin@spool.test")
      .digest("base64url")
      .slice(0, 32);
    await store.append(
      Subjects.email(emailHash),
      [EmailClaimed.create({ email: "admin@spool.test", userId: "user-from-crash" })],
      {
        expectedSequence: 0,
      },
    );
    await nc.close();

    const auth = await startTestAuth(infra(), {}, env);
    try {
      const r = await call(auth.client.login, auth.client, {
        email: env.SPOOL_BOOTSTRAP_ADMIN_EMAIL!,
        password: env.SPOOL_BOOTSTRAP_ADMIN_PASSWORD!,
      });
      // The claims' ids were adopted: the organisation and admin are the ones the crashed start meant to create.
      expect(r.user).toMatchObject({ userId: "user-from-crash", orgId: "org-from-crash" });
    } finally {
      await auth.stop();
    }

    // An existing bootstrap is left alone: a different configured password does not replace the real one.
    const again = await startTestAuth(
      infra(),
      {},
      { ...env, SPOOL_BOOTSTRAP_ADMIN_PASSWORD: "another long password here" },
    );
    try {
      await expect(
        call(again.client.login, again.client, {
          email: env.SPOOL_BOOTSTRAP_ADMIN_EMAIL!,
          password: "another long password here",
        }),
      ).rejects.toMatchObject({ code: 16 });
    } finally {
      await again.stop();
    }
  });
});
