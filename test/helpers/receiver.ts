/** A real HTTP receiver on 127.0.0.1 (port 0) standing in for a forward target: records requests, answers as told. */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

export type Answer = (res: ServerResponse, index: number) => void;

export interface Receiver {
  url: string;
  received: Received[];
  /** How the next requests are answered; replace it to change the target's behaviour mid-test. */
  answer: Answer;
  close(): Promise<void>;
}

export function answerWith(status: number, body = ''): Answer {
  return (res) => {
    res.statusCode = status;
    res.end(body);
  };
}

export async function startReceiver(answer: Answer = (res) => res.end()): Promise<Receiver> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      receiver.answer(res, received.length - 1);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const receiver: Receiver = {
    url: `http://127.0.0.1:${port}/hooks/sellsy`,
    received,
    answer,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return receiver;
}
