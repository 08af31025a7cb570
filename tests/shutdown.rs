//! Graceful shutdown of the real binary: SIGTERM lets open streams finish, within a deadline.

mod common;

use std::time::{Duration, Instant};

use common::{
    chat_request,
    fake_openai::{Behavior, FakeOpenAi, StreamEnd, reply_stream},
    process::Process,
};
use futures_util::StreamExt;
use switchboard::proto::chat_service_client::ChatServiceClient;

const TEXT: &str = "one two three four five six seven eight nine ten";

/// The binary serving one group `g` from `upstream`.
async fn replica(upstream: &FakeOpenAi, extra: &[&str]) -> Process {
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"{}\"}}}}\n",
        upstream.base()
    );
    Process::serve(&yaml, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_twenty_open_streams_finish() {
    let upstream = FakeOpenAi::start(|n| Behavior::Stream {
        data: reply_stream(n, "m", TEXT),
        delay: Duration::from_millis(100),
        end: StreamEnd::Done,
    })
    .await;
    let mut replica = replica(&upstream, &[]).await;
    let channel = tonic::transport::Channel::from_shared(replica.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = ChatServiceClient::new(channel);
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(20);
    let streams: Vec<_> = (0..20)
        .map(|_| {
            let (mut c, first_tx) = (client.clone(), first_tx.clone());
            tokio::spawn(async move {
                let mut s = c.stream_complete(chat_request("g", "hi")).await?.into_inner();
                let mut text = String::new();
                let mut first = true;
                while let Some(chunk) = s.next().await {
                    let chunk = chunk?;
                    if first {
                        first = false;
                        let _ = first_tx.send(()).await;
                    }
                    text.extend(common::delta_text(&chunk));
                }
                Ok::<_, tonic::Status>(text)
            })
        })
        .collect();
    for _ in 0..20 {
        first_rx.recv().await.unwrap(); // every stream is open and flowing
    }
    replica.sigterm();
    let mut complete = 0;
    for s in streams {
        let text = s
            .await
            .unwrap()
            .expect("a stream open at SIGTERM finishes normally");
        assert_eq!(text, TEXT);
        complete += 1;
    }
    let (took, clean) = replica.exit(Duration::from_secs(15)).await;
    println!("SIGTERM with 20 open streams: {complete}/20 completed, process exited {took:?} after the last");
    assert!(clean, "a drained shutdown exits with success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_ends_cannot_hold_shutdown_past_the_deadline() {
    let upstream = FakeOpenAi::start(|n| {
        let mut data = reply_stream(n, "m", TEXT);
        data.truncate(2);
        Behavior::Stream {
            data,
            delay: Duration::ZERO,
            end: StreamEnd::Stall,
        }
    })
    .await;
    let mut replica = replica(&upstream, &["--shutdown-timeout", "0.5"]).await;
    let channel = tonic::transport::Channel::from_shared(replica.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut s = ChatServiceClient::new(channel)
        .stream_complete(chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    s.next().await.unwrap().unwrap();
    let signalled = Instant::now();
    replica.sigterm();
    let (_, clean) = replica.exit(Duration::from_secs(5)).await;
    assert!(clean);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
}
