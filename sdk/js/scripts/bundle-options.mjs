// Options of every bundle we ship and measure (build.mjs, size.mjs): one minifier for all.

/**
 * Internal member names, shortened in the bundles. Only names that are never a wire key, an
 * option, an event field or part of an interface an application implements (Host,
 * Transport, QueueStore): the tests run against the bundles, so a wrong entry fails them.
 */
const INTERNAL = `armedAt beforeConnected callTimeouts calls closedError command connectDeadline connectId
  connectionToken detach fail fetching fetchingToken finish handlers hasTokenProvider heard host keyPrefix
  lastHeard lastId lastKey listen lost lostEpoch needsToken openTransport outbox owner pending phase
  pingInterval pingSent positionsKey publishReply publishTimeouts pump pumpPublishes reconnectAt
  refreshAt renewAt resubscribeAt resume resuming savePositions scheduleRefresh scheduleSubscriptionToken
  sendPublish setState settle started subId subscribeFields subscribeReply subscribeWaiting subscribed
  tokenAt tokenRetried tracker transportOpen unsubscribeCommand woken arm stop deliver conn fallback
  remembered hung skip`.split(/\s+/);

export const bundle = {
  bundle: true,
  minify: true,
  target: 'es2020',
  legalComments: 'none',
  mangleProps: new RegExp(`^(${INTERNAL.join('|')})$`),
};
